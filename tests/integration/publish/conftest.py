"""Fixtures for the publish tests: a recording, fault-injecting HTTP proxy in front of the moto server,
boto3 clients for checking what ended up in moto, and sparse raw images.

The proxy is a real HTTP hop (ThreadingHTTPServer forwarding to moto with http.client). It records every
request (method, path, decoded EC2 query parameters) so tests can check what a module *sent* where moto drops
fields (RegisterImage's TpmSupport, BootMode, ImdsSupport, BlockDeviceMappings), and it can answer chosen
requests with throttling or 5xx errors instead of forwarding them.
"""
import hashlib
import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

BLOCK = 512 * 1024


class FaultRule(object):
    """Answer requests whose "METHOD path[ Action=X]" matches `pattern` with the given errors, in turn, then
    forward. EC2 query calls are all "POST /", so their Action is part of the line matched."""

    def __init__(self, pattern, errors):
        self.pattern = re.compile(pattern)
        self.errors = list(errors)  # (status, error code); the last one repeats when `forever`
        self.forever = False
        self.hits = 0


class RecordingProxy(object):
    def __init__(self, upstream):
        self.upstream = urlsplit(upstream)
        self.requests = []
        self.rules = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                entry = proxy._record(self.command, self.path, self.headers, body)
                fault = proxy._fault_for(self.command, self.path, entry["params"].get("Action"))
                if fault is not None:
                    status, code = fault
                    if entry["params"].get("Action"):  # EC2 query API: XML errors
                        payload = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>%s"
                                   "</Code><Message>injected by the test proxy</Message></Error></Errors>"
                                   "<RequestID>test</RequestID></Response>" % code).encode()
                        content_type = "text/xml"
                    else:  # EBS direct APIs: JSON errors
                        payload = json.dumps({"__type": code, "message": "injected by the test proxy"}).encode()
                        content_type = "application/json"
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("x-amzn-ErrorType", code)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = dict((k, v) for k, v in self.headers.items() if k.lower() != "host")
                headers["Host"] = proxy.upstream.netloc
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _record(self, method, path, headers, body):
        entry = {"method": method, "path": path, "params": {}}
        if headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            entry["params"] = dict((k, v[0]) for k, v in parse_qs(body.decode("utf-8")).items())
        with self.lock:
            self.requests.append(entry)
        return entry

    def _fault_for(self, method, path, action=None):
        line = "%s %s" % (method, path) + (" Action=%s" % action if action else "")
        with self.lock:
            for rule in self.rules:
                if rule.pattern.search(line):
                    if rule.hits < len(rule.errors) or (rule.forever and rule.errors):
                        fault = rule.errors[min(rule.hits, len(rule.errors) - 1)]
                        rule.hits += 1
                        return fault
        return None

    def inject(self, pattern, errors, forever=False):
        rule = FaultRule(pattern, errors)
        rule.forever = forever
        with self.lock:
            self.rules.append(rule)
        return rule

    def calls(self, action):
        """Recorded EC2 query API calls with this Action (parameters decoded)."""
        with self.lock:
            return [r["params"] for r in self.requests if r["params"].get("Action") == action]

    def block_puts(self):
        with self.lock:
            return [r["path"] for r in self.requests if r["method"] == "PUT" and "/blocks/" in r["path"]]

    def clear(self):
        with self.lock:
            del self.requests[:]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def fresh_moto(moto_server):
    """Empty moto's backends: ThreadedMotoServer keeps them in-process, so they outlive one server."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(moto_server + "/moto-api/reset", method="POST")).read()
    return moto_server


@pytest.fixture
def aws_proxy(moto_server):
    proxy = RecordingProxy(moto_server)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def aws(moto_server):
    """boto3 clients straight to moto (not through the proxy), for checking results."""

    class Clients(object):
        url = moto_server

        def client(self, service, region="us-east-1"):
            return boto3.client(service, region_name=region, endpoint_url=moto_server)

        def snapshot_ids(self, region="us-east-1"):
            ec2 = self.client("ec2", region)
            pages = ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"])
            return set(s["SnapshotId"] for page in pages for s in page["Snapshots"])

        def image_ids(self, region="us-east-1"):
            ec2 = self.client("ec2", region)
            return set(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"])

    return Clients()


def write_sparse_image(path, size, regions, seed=b"attestable"):
    """A raw image of `size` bytes: zeros except pseudo-random data at the (offset, length) regions."""
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, length in regions:
            handle.seek(offset)
            data = b""
            counter = 0
            while len(data) < length:
                data += hashlib.sha256(seed + str(offset).encode() + str(counter).encode()).digest()
                counter += 1
            handle.write(data[:length])
    return path


def read_snapshot(ebs, snapshot_id, size):
    """Reassemble `size` bytes of a snapshot block by block (unwritten blocks read as zeros)."""
    blocks = {}
    kwargs = {"SnapshotId": snapshot_id}
    while True:
        page = ebs.list_snapshot_blocks(**kwargs)
        for block in page["Blocks"]:
            blocks[block["BlockIndex"]] = block["BlockToken"]
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    out = bytearray(size + BLOCK)
    for index, token in blocks.items():
        data = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=token)["BlockData"].read()
        out[index * BLOCK:index * BLOCK + len(data)] = data
    return bytes(out[:size]), sorted(blocks)


@pytest.fixture
def sparse_image(tmp_path):
    """5 MiB + 1234 bytes, mostly zeros: data in blocks 0, 3 (straddling into 4), and the short last block."""
    size = 5 * 1024 * 1024 + 1234
    regions = [(100, 4000), (3 * BLOCK + BLOCK - 700, 1500), (10 * BLOCK + 10, 1000)]
    path = write_sparse_image(str(tmp_path / "disk.raw"), size, regions)
    return {"path": path, "size": size, "nonzero_blocks": [0, 3, 4, 10],
            "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}


@pytest.fixture
def read_back():
    """read_back(ebs_client, snapshot_id, size) -> (bytes, written block indexes)."""
    return read_snapshot

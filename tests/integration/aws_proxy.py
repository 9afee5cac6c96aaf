"""A recording, fault-injecting HTTP proxy in front of the moto server, for tests that must see what a module
*sent* (moto drops some fields) or make AWS misbehave at a chosen request.

A real HTTP hop (ThreadingHTTPServer forwarding to moto with http.client). It records every request (method,
path, X-Amz-Target, decoded EC2 query parameters); it can answer chosen requests with throttling or 5xx errors
instead of forwarding them; and `on_request(entry)` runs before each request is forwarded, so a test can act
(e.g. edit a key policy) at an exact point of a module's conversation with AWS.
"""
import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FaultRule(object):
    """Answer requests whose "METHOD path[ Action=X]" matches `pattern` with the given errors, in turn, then
    forward. EC2 query calls are all "POST /", so their Action is part of the line matched."""

    def __init__(self, pattern, errors):
        self.pattern = re.compile(pattern)
        self.errors = list(errors)  # (status, error code); the last one repeats when `forever`
        self.forever = False
        self.hits = 0


class RecordingProxy(object):
    def __init__(self, upstream, on_request=None):
        self.upstream = urlsplit(upstream)
        self.on_request = on_request
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
                if proxy.on_request is not None:
                    proxy.on_request(entry)
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
        entry = {"method": method, "path": path, "target": headers.get("X-Amz-Target", ""), "params": {}}
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

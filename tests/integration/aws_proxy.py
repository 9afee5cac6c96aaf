# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A recording, fault-injecting HTTP proxy in front of the moto server, for tests that must see what a module
*sent* (moto drops some fields) or make AWS misbehave at a chosen request.

A real HTTP hop (ThreadingHTTPServer forwarding to moto with http.client). It records every request (method,
path, X-Amz-Target, decoded EC2 query parameters); it can answer chosen requests with throttling or 5xx errors
instead of forwarding them; and `on_request(entry)` runs before each request is forwarded, so a test can act
(e.g. edit a key policy) at an exact point of a module's conversation with AWS.

Two AWS behaviours moto lacks can be switched on:
- `fail_new(...)`: eventual consistency. After a request creates a resource (RegisterImage, CopyImage,
  StartSnapshot ...), the first N later requests that name the new id answer "not found", as AWS can for seconds.
- `emulate_images=True`: the image attributes moto drops on RegisterImage (BootMode, TpmSupport, ImdsSupport,
  UefiData, the block device mapping) are remembered from the request and put into DescribeImages answers and
  answered for DescribeImageAttribute; CopyImage copies them to the copy (keeping moto's own snapshot for it),
  except the ones named in `copy_drops` - a CopyImage that loses attributes, as AWS has been seen to do.
"""
import copy
import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree


class FaultRule(object):
    """Answer requests whose "METHOD path[ Action=X]" matches `pattern` with the given errors, in turn, then
    forward. EC2 query calls are all "POST /", so their Action is part of the line matched."""

    def __init__(self, pattern, errors):
        self.pattern = re.compile(pattern)
        self.errors = list(errors)  # (status, error code); the last one repeats when `forever`
        self.forever = False
        self.hits = 0


class NewResourceRule(object):
    """After a request matching `created_by` whose answer holds an id (`id_pattern`'s group 1), the first `count`
    later requests matching `requests` that name that id are answered (status, code)."""

    def __init__(self, created_by, id_pattern, requests, status, code, count):
        self.created_by = re.compile(created_by)
        self.id_pattern = re.compile(id_pattern)
        self.requests = re.compile(requests)
        self.status = status
        self.code = code
        self.count = count
        self.ids = {}  # new id -> "not found" answers given so far

    @property
    def hits(self):
        return sum(self.ids.values())


EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15"
IMAGE_ATTRIBUTES = (("BootMode", "bootMode"), ("TpmSupport", "tpmSupport"), ("ImdsSupport", "imdsSupport"),
                    ("UefiData", "uefiData"))


class RecordingProxy(object):
    def __init__(self, upstream, on_request=None, emulate_images=False):
        self.upstream = urlsplit(upstream)
        self.on_request = on_request
        self.requests = []
        self.rules = []
        self.new_rules = []
        self.emulate_images = emulate_images
        self.images = {}  # image id -> {"BootMode": ..., ..., "mapping": [...] or None}
        self.copy_drops = set()
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
                if fault is None:
                    fault = proxy._new_resource_fault(entry, body)
                emulated = proxy._emulated_answer(entry) if fault is None else None
                if emulated is not None:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(emulated)))
                    self.end_headers()
                    self.wfile.write(emulated)
                    return
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
                data = proxy._after(entry, response.status, response.read())
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
        scope = re.search(r"Credential=([^/]+)/[0-9]+/([^/]+)/", headers.get("Authorization", ""))
        entry = {"method": method, "path": path, "target": headers.get("X-Amz-Target", ""), "params": {},
                 "region": scope.group(2) if scope else None, "access_key": scope.group(1) if scope else None}
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

    @staticmethod
    def _line(entry):
        action = entry["params"].get("Action")
        return "%s %s" % (entry["method"], entry["path"]) + (" Action=%s" % action if action else "")

    def fail_new(self, created_by, id_pattern, requests, code, count, status=400):
        """Answer (status, code) to the first `count` requests matching `requests` that name a resource created
        by a request matching `created_by` (its id is group 1 of `id_pattern` in the creating answer)."""
        rule = NewResourceRule(created_by, id_pattern, requests, status, code, count)
        with self.lock:
            self.new_rules.append(rule)
        return rule

    def _new_resource_fault(self, entry, body):
        line = self._line(entry)
        text = entry["path"] + " " + body.decode("utf-8", "replace")
        with self.lock:
            for rule in self.new_rules:
                if not rule.requests.search(line):
                    continue
                for new_id, given in rule.ids.items():
                    if given < rule.count and new_id in text:
                        rule.ids[new_id] = given + 1
                        return rule.status, rule.code
        return None

    def _after(self, entry, status, data):
        """Learn new ids and image attributes from an answer; fill in what moto leaves out of DescribeImages."""
        if status >= 300:
            return data
        line = self._line(entry)
        text = data.decode("utf-8", "replace")
        with self.lock:
            for rule in self.new_rules:
                if rule.created_by.search(line):
                    found = rule.id_pattern.search(text)
                    if found:
                        rule.ids.setdefault(found.group(1), 0)
        if not self.emulate_images:
            return data
        action = entry["params"].get("Action")
        params = entry["params"]
        if action in ("RegisterImage", "CopyImage"):
            found = re.search(r"<imageId>(ami-[0-9a-f]+)</imageId>", text)
            if found:
                with self.lock:
                    if action == "RegisterImage":
                        attributes = dict((key, params[key]) for key, _tag in IMAGE_ATTRIBUTES if key in params)
                        attributes["RootDeviceName"] = params.get("RootDeviceName")
                        attributes["mapping"] = self._sent_mapping(params)
                    else:
                        attributes = copy.deepcopy(self.images.get(params.get("SourceImageId"), {}))
                        attributes["mapping"] = None  # the copy's own snapshot, as moto made it
                        attributes.pop("RootDeviceName", None)
                        for key in self.copy_drops:
                            attributes.pop(key, None)
                    self.images[found.group(1)] = attributes
        elif action == "DescribeImages":
            return self._patch_images(data)
        return data

    @staticmethod
    def _sent_mapping(params):
        mapping = []
        n = 1
        while "BlockDeviceMapping.%d.DeviceName" % n in params:
            prefix = "BlockDeviceMapping.%d." % n
            mapping.append(dict((k[len(prefix):], v) for k, v in params.items() if k.startswith(prefix)))
            n += 1
        return mapping

    def _patch_images(self, data):
        root = ElementTree.fromstring(data)
        namespace = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
        ElementTree.register_namespace("", namespace)
        q = "{%s}" % namespace if namespace else ""
        with self.lock:
            for item in root.iter(q + "item"):
                image_id = item.find(q + "imageId")
                attributes = self.images.get(image_id.text) if image_id is not None else None
                if attributes is None:
                    continue
                for key, tag in IMAGE_ATTRIBUTES[:3]:
                    for old in item.findall(q + tag):
                        item.remove(old)
                    if key in attributes:
                        ElementTree.SubElement(item, q + tag).text = attributes[key]
                if attributes.get("mapping"):
                    for old in item.findall(q + "blockDeviceMapping") + item.findall(q + "rootDeviceName"):
                        item.remove(old)
                    ElementTree.SubElement(item, q + "rootDeviceName").text = attributes["RootDeviceName"]
                    mappings = ElementTree.SubElement(item, q + "blockDeviceMapping")
                    for sent in attributes["mapping"]:
                        entry = ElementTree.SubElement(mappings, q + "item")
                        ElementTree.SubElement(entry, q + "deviceName").text = sent["DeviceName"]
                        ebs = ElementTree.SubElement(entry, q + "ebs")
                        for key in ("SnapshotId", "VolumeSize", "VolumeType", "DeleteOnTermination"):
                            if "Ebs." + key in sent:
                                tag = key[0].lower() + key[1:]
                                ElementTree.SubElement(ebs, q + tag).text = sent["Ebs." + key]
        return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)

    def _emulated_answer(self, entry):
        """DescribeImageAttribute of an emulated attribute, answered here (moto answers 500 for some)."""
        params = entry["params"]
        if not self.emulate_images or params.get("Action") != "DescribeImageAttribute":
            return None
        tags = dict((tag, key) for key, tag in IMAGE_ATTRIBUTES)
        with self.lock:
            attributes = self.images.get(params.get("ImageId"))
        if attributes is None or params.get("Attribute") not in tags:
            return None
        value = attributes.get(tags[params["Attribute"]])
        inner = "<%s><value>%s</value></%s>" % (params["Attribute"], value, params["Attribute"]) if value else ""
        return ('<?xml version="1.0" encoding="UTF-8"?><DescribeImageAttributeResponse xmlns="%s">'
                "<requestId>emulated</requestId><imageId>%s</imageId>%s</DescribeImageAttributeResponse>"
                % (EC2_NS, params["ImageId"], inner)).encode()

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

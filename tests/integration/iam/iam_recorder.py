# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn what the recording proxy saw into IAM action names (service:Action), for checking docs/iam/*.json.

The service comes from each request's SigV4 credential scope (".../<region>/<service>/aws4_request"); the action
from the EC2/IAM/STS query parameter Action, the JSON protocols' X-Amz-Target (KMS, SSM), or, for the EBS direct
APIs (REST), the method and path.
"""
import fnmatch
import json
import os
import re

from aws_proxy import RecordingProxy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DOCS = os.path.join(ROOT, "docs", "iam")

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_EBS = [
    ("POST", re.compile(r"^/snapshots/completion/[^/?]+"), "CompleteSnapshot"),
    ("POST", re.compile(r"^/snapshots/?(\?|$)"), "StartSnapshot"),
    ("PUT", re.compile(r"^/snapshots/[^/]+/blocks/\d+"), "PutSnapshotBlock"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks/\d+"), "GetSnapshotBlock"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks/?(\?|$)"), "ListSnapshotBlocks"),
    ("GET", re.compile(r"^/snapshots/[^/]+/changedblocks"), "ListChangedBlocks"),
]


class IamRecordingProxy(RecordingProxy):
    """The shared recording proxy, also noting each request's signing service."""

    def _record(self, method, path, headers, body):
        entry = super(IamRecordingProxy, self)._record(method, path, headers, body)
        match = _SCOPE.search(headers.get("Authorization", ""))
        entry["service"] = match.group(1) if match else ""
        return entry

    def actions(self):
        with self.lock:
            requests = list(self.requests)
        return set(filter(None, (action_of(r) for r in requests)))


def action_of(entry):
    service = entry.get("service", "")
    if not service or entry["path"].startswith("/moto-api"):
        return None
    if entry["params"].get("Action"):
        return "%s:%s" % (service, entry["params"]["Action"])
    if entry["target"]:
        return "%s:%s" % (service, entry["target"].split(".")[-1])
    if service == "ebs":
        for method, pattern, name in _EBS:
            if entry["method"] == method and pattern.search(entry["path"]):
                return "ebs:" + name
    raise AssertionError("cannot name the IAM action of %s %s (service %s)" % (entry["method"], entry["path"], service))


def load_policy(name):
    with open(os.path.join(DOCS, name + ".json")) as handle:
        return json.load(handle)


def load_exceptions():
    with open(os.path.join(DOCS, "not-called-here.json")) as handle:
        return json.load(handle)


def allowed_patterns(policy):
    patterns = []
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement, statement
        actions = statement["Action"]
        patterns.extend([actions] if isinstance(actions, str) else actions)
    return patterns


def not_allowed(policy, actions):
    """The actions that no Allow statement of the identity policy covers (IAM matches actions case-insensitively)."""
    patterns = [p.lower() for p in allowed_patterns(policy)]
    return sorted(a for a in actions if not any(fnmatch.fnmatchcase(a.lower(), p) for p in patterns))


def never_called(policy, actions):
    lowered = [a.lower() for a in actions]
    return sorted(p for p in allowed_patterns(policy) if not any(fnmatch.fnmatchcase(a, p.lower()) for a in lowered))

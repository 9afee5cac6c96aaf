# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""build_and_publish fails on missing or invalid builder inputs before it changes anything in AWS.

The whole playbook runs (description rendered and validated on this machine, then the builder role) against a
moto server over HTTP through the recording proxy (tests/integration/aws_proxy.py), which sees every AWS request:
none of them may be one that creates or changes something, and no instance, security group or key pair exists
afterwards.
"""
import os
import re

import boto3
import pytest

import playbook_runner
from aws_proxy import RecordingProxy

PLAYBOOK = os.path.join(playbook_runner.ROOT, "playbooks", "build_and_publish.yml")
# Every EC2/IAM/EBS/S3 request that is not a read (Describe*, Get*, List*, Simulate*).
READ = re.compile(r"^(Describe|Get|List|Simulate)")


@pytest.fixture
def proxy(moto_server):
    result = RecordingProxy(moto_server)
    try:
        yield result
    finally:
        result.close()


def changes(proxy):
    found = []
    for request in proxy.requests:
        action = request["params"].get("Action") or request["target"].rsplit(".", 1)[-1]
        if action and not READ.match(action):
            found.append(action)
        elif not action and request["method"] in ("PUT", "POST", "DELETE"):
            found.append("%s %s" % (request["method"], request["path"]))  # S3/EBS REST calls that write
    return found


@pytest.mark.parametrize("settings, variable, message", [
    ({"builder_connection": "ssh", "builder_ssh_cidr": "198.51.100.7", "builder_iam_instance_profile": ""},
     "builder_iam_instance_profile", "builder_iam_instance_profile is empty"),
    ({"builder_connection": "ssh", "builder_ssh_cidr": "198.51.100.7", "builder_iam_instance_profile": "no-such-profile"},
     "builder_iam_instance_profile", "builder_iam_instance_profile=no-such-profile: no instance profile named no-such-profile"),
    ({"builder_connection": "ssh", "builder_ssh_cidr": "", "builder_iam_instance_profile": "attestable-builder"},
     "builder_ssh_cidr", "builder_connection=ssh needs builder_ssh_cidr"),
    ({"builder_connection": "ssm", "builder_ssm_bucket": "", "builder_iam_instance_profile": "attestable-builder"},
     "builder_ssm_bucket", "builder_connection=ssm needs builder_ssm_bucket"),
], ids=["no-instance-profile", "unknown-instance-profile", "ssh-without-cidr", "ssm-without-bucket"])
def test_build_and_publish_fails_before_any_aws_change(moto_server, proxy, tmp_path, settings, variable, message):
    artifacts = tmp_path / "artifacts"
    extra = dict(settings, attestable_aws_region="us-east-1", attestable_aws_endpoint_url=proxy.url,
                 attestable_artifacts_dir=str(artifacts))
    proc, results, _data = playbook_runner.run(PLAYBOOK, tmp_path, extra_vars=extra)
    assert proc.returncode != 0
    failed = [(name, r["msg"]) for name, rs in results.items() for r in rs if r.get("failed")]
    assert failed and message in failed[0][1], failed
    assert variable in failed[0][1]
    # The description was rendered and validated first (local work only) ...
    assert "Describe the image and validate the description" in results or (artifacts / "description").is_dir()
    # ... and nothing in AWS was created or changed; the builder was never launched.
    assert changes(proxy) == []
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name="us-east-1")
    assert ec2.describe_instances()["Reservations"] == []
    assert [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""docs/iam/*.json are the IAM policies each stage needs. Run each stage against moto through the recording
proxy, name every AWS action it called, and fail if the documented policy for that stage does not allow one.
Actions a policy allows that no run here calls (only reachable on real AWS, e.g. iam:PassRole inside RunInstances,
or on other paths) must be exactly those docs/iam/not-called-here.json lists with a reason.
"""
import json
import os
import sys

import boto3
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "authorize"))

from iam_recorder import IamRecordingProxy, load_exceptions, load_policy, never_called, not_allowed  # noqa: E402
from authorize_helpers import APP_ROLE, SAFE_POLICY, Aws  # noqa: E402

BUILDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "builder", "playbooks")


@pytest.fixture
def proxy(moto_server):
    recorder = IamRecordingProxy(moto_server)
    try:
        yield recorder
    finally:
        recorder.close()


def check(policy_name, actions):
    policy = load_policy(policy_name)
    missing = not_allowed(policy, actions)
    assert not missing, "docs/iam/%s.json does not allow %s (called: %s)" % (policy_name, missing, sorted(actions))
    unused = never_called(policy, actions)
    expected_unused = sorted(load_exceptions()[policy_name])
    assert unused == expected_unused, (
        "docs/iam/%s.json allows %s that no run here called; docs/iam/not-called-here.json must list exactly those, "
        "with the reason (called: %s)" % (policy_name, unused, sorted(actions)))


def instance_profile_from_docs(moto_server, name):
    """An instance profile whose role has exactly docs/iam/builder-instance-profile.json: the builder role's
    pre-launch check must accept the documented policy."""
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=moto_server)
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName=name, PolicyName="upload",
                        PolicyDocument=json.dumps(load_policy("builder-instance-profile")))
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return name


def test_builder_lifecycle_policy(proxy, moto_server, run_playbook):
    settings = {"builder_aws_region": "us-east-1", "builder_aws_endpoint_url": proxy.url,
                "builder_ssh_cidr": "198.51.100.7", "builder_wait_for_connection": False,
                "builder_install_packages": False, "builder_keep": False, "builder_upload_on_builder": True,
                "builder_iam_instance_profile": instance_profile_from_docs(moto_server, "attestable-builder-iam")}
    run = run_playbook(os.path.join(BUILDER, "launch.yml"), extra_vars=settings)
    assert run.rc == 0, run.stdout + run.stderr
    run_id = run.task("Show the builder resources")["builder_resources"]["run_id"]
    run = run_playbook(os.path.join(BUILDER, "teardown.yml"), extra_vars=dict(settings, builder_run_id=run_id))
    assert run.rc == 0, run.stdout + run.stderr
    check("controller-builder", proxy.actions())


UPLOAD = """
- hosts: localhost
  gather_facts: false
  tasks:
    - attestable.ami.snapshot_upload:
        src: "{{ src }}"
        region: us-east-1
        endpoint_url: "{{ endpoint }}"
        tags: {Name: iam-test}
      register: upload
    - attestable.ami.snapshot_upload:
        src: "{{ src }}"
        region: us-east-1
        endpoint_url: "{{ endpoint }}"
        tags: {Name: iam-test}
    - ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ upload.snapshot_id }}"
        mode: "0600"
"""

REGISTER = """
- hosts: localhost
  gather_facts: false
  tasks:
    - attestable.ami.image_register:
        name: iam-test-1.0.0
        snapshot_id: "{{ snapshot_id }}"
        architecture: x86_64
        measurements: "{{ measurements }}"
        regions: [eu-west-1]
        launch_permissions: ["210987654321"]
        region: us-east-1
        endpoint_url: "{{ endpoint }}"
      register: registered
    - attestable.ami.image_register:
        name: iam-test-1.0.0
        state: absent
        delete_snapshots: true
        regions: [eu-west-1]
        region: us-east-1
        endpoint_url: "{{ endpoint }}"
"""


def test_upload_and_publish_policies(proxy, run_playbook, tmp_path):
    disk = tmp_path / "disk.raw"
    with open(str(disk), "wb") as handle:
        handle.truncate(3 * 1024 * 1024)
        handle.write(b"attestable iam test")
    out = tmp_path / "snapshot_id"
    run = run_playbook(UPLOAD, extra_vars={"src": str(disk), "endpoint": proxy.url, "out": str(out)})
    assert run.rc == 0, run.stdout + run.stderr
    check("builder-instance-profile", proxy.actions())

    proxy.clear()
    measurements = {"HashAlgorithm": "SHA384", "PCR4": "4" * 96, "PCR7": "7" * 96, "PCR12": "0" * 96}
    run = run_playbook(REGISTER, extra_vars={"snapshot_id": out.read_text(), "endpoint": proxy.url,
                                             "measurements": measurements})
    assert run.rc == 0, run.stdout + run.stderr
    check("controller-publish", proxy.actions())


AUTHORIZE = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: attestable.ami.kms_authorize
"""


def test_authorize_policy(proxy, moto_server, run_playbook, tmp_path):
    aws = Aws(moto_server)
    aws.create_role(APP_ROLE)
    key = aws.create_key(SAFE_POLICY)
    ami = aws.tagged_ami("iam-test", {})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({
        "schema_version": 1, "amis": {"us-east-1": ami},
        "measurements": {"HashAlgorithm": "SHA384", "PCR4": "4" * 96, "PCR7": "7" * 96, "PCR12": "0" * 96,
                         "boot_mode": "standard", "engines": ["python"]}}))
    settings = {"kms_authorize_aws_endpoint_url": proxy.url, "kms_authorize_aws_region": "us-east-1",
                "kms_authorize_principals": [APP_ROLE], "kms_authorize_manifest_path": str(manifest),
                "kms_authorize_keys": [{"key_id": key["KeyId"]}]}
    for state in ("present", "absent"):
        run = run_playbook(AUTHORIZE, extra_vars=dict(settings, kms_authorize_state=state))
        assert run.rc == 0, run.stdout + run.stderr
    check("controller-authorize", proxy.actions())

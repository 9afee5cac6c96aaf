"""image_register against a real moto server over HTTP, through the recording proxy.

moto's RegisterImage keeps only Name and Description (environment.md), so what the module SENDS for TpmSupport,
BootMode, ImdsSupport, UefiData and the block device mapping is checked on the proxy's record of the request.
"""
import base64
import hashlib
import json

import pytest

ACCOUNT = "210987654321"
ORG = "arn:aws:organizations::123456789012:organization/o-abcdefghij"
OU = "arn:aws:organizations::123456789012:ou/o-abcdefghij/ou-ab12-cdefghij"

REGISTER = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Register the AMI
      attestable.ami.image_register:
        name: "{{ name | default('attestable-test-1.0.0') }}"
        state: "{{ state | default('present') }}"
        snapshot_id: "{{ snapshot_id | default(omit) }}"
        architecture: "{{ architecture | default('arm64') }}"
        measurements: "{{ measurements | default(omit) }}"
        uefi_data: "{{ uefi_data | default(omit) }}"
        regions: "{{ regions | default([]) }}"
        launch_permissions: "{{ launch_permissions | default(omit) }}"
        delete_snapshots: "{{ delete_snapshots | default(false) }}"
        description: attestable test image
        tags:
          Project: attestable
        region: us-east-1
        endpoint_url: "{{ endpoint }}"
      register: ami
"""


def pcr(text):
    return hashlib.sha384(text.encode()).hexdigest()


MEASUREMENTS = {"HashAlgorithm": "SHA384", "PCR4": pcr("pcr4"), "PCR7": pcr("pcr7"), "PCR12": pcr("pcr12"),
                "engines": ["nitro-tpm-pcr-compute", "attestable"]}


@pytest.fixture
def snapshot_id(aws):
    """A small completed snapshot made with the EBS direct APIs straight on moto."""
    ebs = aws.client("ebs")
    snap = ebs.start_snapshot(VolumeSize=2)["SnapshotId"]
    block = b"\x01" * 512 * 1024
    digest = hashlib.sha256(block).digest()
    ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockData=block, DataLength=len(block),
                           Checksum=base64.b64encode(digest).decode(), ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1)
    return snap


def register(run_playbook, proxy, **variables):
    variables.setdefault("endpoint", proxy.url)
    return run_playbook(REGISTER, extra_vars=variables)


def tags_of(aws, image_id, region="us-east-1"):
    image = aws.client("ec2", region).describe_images(ImageIds=[image_id])["Images"][0]
    return dict((t["Key"], t["Value"]) for t in image.get("Tags", []))


def test_register_sends_nitrotpm_uefi_request_and_is_idempotent(run_playbook, aws_proxy, aws, snapshot_id):
    uefi_data = base64.b64encode(b"uefi variable store").decode()
    first = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS,
                     uefi_data=uefi_data)
    assert first.rc == 0, first.stdout
    result = first.task("Register the AMI")
    assert result["changed"] is True
    image_id = result["image_id"]
    assert result["images"] == {"us-east-1": image_id}

    calls = aws_proxy.calls("RegisterImage")
    assert len(calls) == 1
    sent = calls[0]
    expected = {
        "Name": "attestable-test-1.0.0",
        "Architecture": "arm64",
        "VirtualizationType": "hvm",
        "RootDeviceName": "/dev/xvda",
        "BootMode": "uefi",
        "TpmSupport": "v2.0",
        "ImdsSupport": "v2.0",
        "EnaSupport": "true",
        "UefiData": uefi_data,
        "BlockDeviceMapping.1.DeviceName": "/dev/xvda",
        "BlockDeviceMapping.1.Ebs.SnapshotId": snapshot_id,
        "BlockDeviceMapping.1.Ebs.VolumeType": "gp3",
        "BlockDeviceMapping.1.Ebs.VolumeSize": "2",
        "BlockDeviceMapping.1.Ebs.DeleteOnTermination": "true",
        "TagSpecification.1.ResourceType": "image",
    }
    for key, value in expected.items():
        assert sent.get(key) == value, "RegisterImage sent %s=%r, expected %r" % (key, sent.get(key), value)
    sent_tags = {}
    n = 1
    while "TagSpecification.1.Tag.%d.Key" % n in sent:
        sent_tags[sent["TagSpecification.1.Tag.%d.Key" % n]] = sent["TagSpecification.1.Tag.%d.Value" % n]
        n += 1
    wanted_tags = {"Project": "attestable", "attestable:HashAlgorithm": "SHA384",
                   "attestable:PCR4": MEASUREMENTS["PCR4"], "attestable:PCR7": MEASUREMENTS["PCR7"],
                   "attestable:PCR12": MEASUREMENTS["PCR12"], "attestable:SnapshotId": snapshot_id}
    assert sent_tags == wanted_tags
    # moto drops TagSpecifications; the module noticed and tagged the image afterwards.
    assert tags_of(aws, image_id) == wanted_tags

    aws_proxy.clear()
    second = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS,
                      uefi_data=uefi_data)
    assert second.rc == 0, second.stdout
    assert second.task("Register the AMI")["changed"] is False
    assert second.task("Register the AMI")["image_id"] == image_id
    assert aws_proxy.calls("RegisterImage") == [] and aws_proxy.calls("CreateTags") == []

    other = dict(MEASUREMENTS, PCR4=pcr("another kernel"))
    clash = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=other)
    assert clash.rc != 0
    msg = clash.task("Register the AMI")["msg"]
    assert "already exists" in msg and "attestable:PCR4" in msg and "state: absent" in msg
    assert aws.image_ids() == {image_id}


def test_check_mode_registers_nothing(run_playbook, aws_proxy, aws, snapshot_id):
    before = aws.image_ids()
    run = run_playbook(REGISTER, extra_vars={"endpoint": aws_proxy.url, "snapshot_id": snapshot_id,
                                             "measurements": MEASUREMENTS}, check=True, diff=True)
    assert run.rc == 0, run.stdout
    assert run.task("Register the AMI")["changed"] is True
    diff = run.task("Register the AMI")["diff"]
    assert diff["before"] == {"us-east-1": {}}
    assert diff["after"]["us-east-1"]["image_id"] == "(new)"
    assert diff["after"]["us-east-1"]["tags"]["attestable:PCR7"] == MEASUREMENTS["PCR7"]
    assert aws_proxy.calls("RegisterImage") == []
    assert aws.image_ids() == before


def test_copy_share_and_absent(run_playbook, aws_proxy, aws, snapshot_id):
    first = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS,
                     regions=["eu-west-1"], launch_permissions=[ACCOUNT, ORG, OU])
    assert first.rc == 0, first.stdout
    result = first.task("Register the AMI")
    images = result["images"]
    assert set(images) == {"us-east-1", "eu-west-1"}
    assert images["us-east-1"] != images["eu-west-1"]
    copy = aws.client("ec2", "eu-west-1").describe_images(ImageIds=[images["eu-west-1"]])["Images"][0]
    assert copy["Name"] == "attestable-test-1.0.0"
    assert tags_of(aws, images["eu-west-1"], "eu-west-1") == tags_of(aws, images["us-east-1"])
    assert tags_of(aws, images["eu-west-1"], "eu-west-1")["attestable:PCR12"] == MEASUREMENTS["PCR12"]
    copy_call = aws_proxy.calls("CopyImage")
    assert len(copy_call) == 1 and copy_call[0]["SourceImageId"] == images["us-east-1"]
    assert copy_call[0]["SourceRegion"] == "us-east-1"

    wanted = sorted([{"UserId": ACCOUNT}, {"OrganizationArn": ORG}, {"OrganizationalUnitArn": OU}], key=str)
    for region, image_id in images.items():
        perms = aws.client("ec2", region).describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
        assert sorted(perms["LaunchPermissions"], key=str) == wanted, region
    assert result["launch_permissions"] == sorted([ACCOUNT, ORG, OU])

    aws_proxy.clear()
    again = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS,
                     regions=["eu-west-1"], launch_permissions=[OU, ACCOUNT, ORG])
    assert again.rc == 0, again.stdout
    assert again.task("Register the AMI")["changed"] is False
    assert again.task("Register the AMI")["images"] == images
    assert aws_proxy.calls("ModifyImageAttribute") == [] and aws_proxy.calls("CopyImage") == []

    narrowed = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS,
                        regions=["eu-west-1"], launch_permissions=[ACCOUNT])
    assert narrowed.rc == 0, narrowed.stdout
    assert narrowed.task("Register the AMI")["changed"] is True
    for region, image_id in images.items():
        perms = aws.client("ec2", region).describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
        assert perms["LaunchPermissions"] == [{"UserId": ACCOUNT}], region

    dry = run_playbook(REGISTER, check=True, extra_vars={"endpoint": aws_proxy.url, "state": "absent",
                                                         "regions": ["eu-west-1"], "delete_snapshots": True})
    assert dry.rc == 0, dry.stdout
    assert dry.task("Register the AMI")["changed"] is True
    assert images["us-east-1"] in aws.image_ids() and images["eu-west-1"] in aws.image_ids("eu-west-1")

    gone = register(run_playbook, aws_proxy, state="absent", regions=["eu-west-1"], delete_snapshots=True)
    assert gone.rc == 0, gone.stdout
    removed = gone.task("Register the AMI")
    assert removed["changed"] is True
    assert removed["images"] == images
    assert snapshot_id in removed["deleted_snapshots"]
    assert images["us-east-1"] not in aws.image_ids()
    assert images["eu-west-1"] not in aws.image_ids("eu-west-1")
    assert snapshot_id not in aws.snapshot_ids()

    still_gone = register(run_playbook, aws_proxy, state="absent", regions=["eu-west-1"], delete_snapshots=True)
    assert still_gone.rc == 0, still_gone.stdout
    assert still_gone.task("Register the AMI")["changed"] is False


def test_failed_copy_deregisters_what_the_run_registered(run_playbook, aws_proxy, aws, snapshot_id):
    before_source, before_copy = aws.image_ids(), aws.image_ids("eu-west-1")
    aws_proxy.inject(r"Action=CopyImage$", [(400, "UnauthorizedOperation")], forever=True)
    run = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS,
                   regions=["eu-west-1"])
    assert run.rc != 0
    assert "Failed to copy" in run.task("Register the AMI")["msg"]
    registered = aws_proxy.calls("RegisterImage")
    assert len(registered) == 1
    deregistered = aws_proxy.calls("DeregisterImage")
    assert len(deregistered) == 1
    assert aws.image_ids() == before_source and aws.image_ids("eu-west-1") == before_copy


BAD_INPUTS = [
    ("snapshot not found", {"snapshot_id": "snap-0123456789abcdef0"}, "snapshot snap-0123456789abcdef0 was not found"),
    ("invalid architecture", {"architecture": "sparc"}, "architecture must be one of: x86_64, arm64, got: sparc"),
    ("short PCR", {"measurements": dict(MEASUREMENTS, PCR4="ab" * 20)}, "measurements.PCR4 must be 96 lowercase hex"),
    ("uppercase PCR", {"measurements": dict(MEASUREMENTS, PCR7=MEASUREMENTS["PCR7"].upper())},
     "measurements.PCR7 must be 96 lowercase hex"),
    ("SHA-256 bank", {"measurements": dict(MEASUREMENTS, HashAlgorithm="SHA256")},
     "measurements.HashAlgorithm must be 'SHA384'"),
    ("no PCRs", {"measurements": {"HashAlgorithm": "SHA384"}}, "measurements holds no PCR values"),
    ("public sharing", {"launch_permissions": ["all"]}, "launch_permissions: 'all' is neither"),
    ("short name", {"name": "x"}, "name: 'x' is not a valid AMI name"),
]


def test_bad_input_fails_clearly_and_creates_nothing(run_playbook, aws_proxy, aws, snapshot_id):
    # One playbook, one task per bad input (ignore_errors), to start Ansible once.
    tasks = []
    for label, variables, _message in BAD_INPUTS:
        args = {"name": "attestable-test-1.0.0", "snapshot_id": snapshot_id, "architecture": "x86_64",
                "measurements": MEASUREMENTS, "region": "us-east-1", "endpoint_url": aws_proxy.url}
        args.update(variables)
        tasks.append({"name": label, "attestable.ami.image_register": args, "ignore_errors": True})
    playbook = json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], indent=1)
    images, snapshots = aws.image_ids(), aws.snapshot_ids()
    run = run_playbook(playbook)
    for label, _variables, message in BAD_INPUTS:
        result = run.task(label)
        assert result.get("failed") is True, label
        assert message in result["msg"], (label, result["msg"])
        assert "Traceback" not in result.get("module_stderr", ""), label
    assert aws_proxy.calls("RegisterImage") == [] and aws_proxy.calls("CreateTags") == []
    assert aws.image_ids() == images and aws.snapshot_ids() == snapshots

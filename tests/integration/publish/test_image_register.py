# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""image_register against a real moto server over HTTP, through the recording proxy.

moto's RegisterImage keeps only Name and Description (environment.md), so what the module SENDS for TpmSupport,
BootMode, ImdsSupport, UefiData and the block device mapping is checked on the proxy's record of the request.
"""
import base64
import hashlib
import json
import struct
import zlib

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
        purge_tags: "{{ purge_tags | default(false) }}"
        wait: "{{ wait | default(true) }}"
        description: attestable test image
        tags:
          Project: attestable
        region: us-east-1
        endpoint_url: "{{ endpoint }}"
      register: ami
"""


def crc32c_bitwise(data):
    """CRC-32C computed bit by bit (independent of the module's table-driven one)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _bit in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


assert crc32c_bitwise(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)


def uefi_store(payload=b"PK KEK db dbx variables", crc=None, magic=b"AMZNUEFI"):
    """An AWS UEFI variable store as python-uefivars lays it out: magic, CRC32C of the rest, version 0, zlib."""
    body = struct.pack("<I", 0) + zlib.compress(payload, 9)
    return base64.b64encode(magic + struct.pack("<I", crc32c_bitwise(body) if crc is None else crc) + body).decode()


def measurement_digest(ami_id, measurements):
    """The digest tag's value, computed here from its documented canonical form (_common/measurements.py)."""
    canonical = dict((k, v) for k, v in measurements.items() if k == "HashAlgorithm" or k.startswith("PCR"))
    canonical["ami_id"] = ami_id
    return hashlib.sha384(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
    uefi_data = uefi_store()
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
    # moto drops TagSpecifications; the module noticed and tagged the image afterwards, adding the digest that
    # binds the measurements to this AMI id (kms_attestation_policy checks it against a kept reference).
    digest = measurement_digest(image_id, MEASUREMENTS)
    assert tags_of(aws, image_id) == dict(wanted_tags, **{"attestable:MeasurementsSHA384": digest})
    assert result["measurements_digests"] == {"us-east-1": digest}

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
    source_tags, copy_tags = tags_of(aws, images["us-east-1"]), tags_of(aws, images["eu-west-1"], "eu-west-1")
    assert copy_tags.pop("attestable:MeasurementsSHA384") == measurement_digest(images["eu-west-1"], MEASUREMENTS)
    assert source_tags.pop("attestable:MeasurementsSHA384") == measurement_digest(images["us-east-1"], MEASUREMENTS)
    assert copy_tags == source_tags
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
    ("invalid architecture", {"architecture": "sparc"}, "architecture must be one of: x86_64, arm64, aarch64, got: sparc"),
    ("short PCR", {"measurements": dict(MEASUREMENTS, PCR4="ab" * 20)}, "measurements.PCR4 must be 96 lowercase hex"),
    ("uppercase PCR", {"measurements": dict(MEASUREMENTS, PCR7=MEASUREMENTS["PCR7"].upper())},
     "measurements.PCR7 must be 96 lowercase hex"),
    ("SHA-256 bank", {"measurements": dict(MEASUREMENTS, HashAlgorithm="SHA256")},
     "measurements.HashAlgorithm must be 'SHA384'"),
    ("no PCRs", {"measurements": {"HashAlgorithm": "SHA384"}}, "measurements holds no PCR values"),
    ("public sharing", {"launch_permissions": ["all"]}, "launch_permissions: 'all' is neither"),
    ("short name", {"name": "x"}, "name: 'x' is not a valid AMI name"),
    ("UEFI data too long", {"uefi_data": "A" * 64004}, "uefi_data: 64004 characters; RegisterImage accepts at most 64000"),
    ("UEFI data not AWS", {"uefi_data": base64.b64encode(b"uefi variable store").decode()},
     "does not start with the magic 'AMZNUEFI'"),
    ("UEFI data altered", {"uefi_data": uefi_store(crc=0x12345678)}, "header says 0x12345678"),
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


# ---- issue 8 section 2 and issue 13 items 11 and 12

NEW_IMAGE = r"Action=(RegisterImage|CopyImage)$"
IMAGE_ID = r"<imageId>(ami-[0-9a-f]+)</imageId>"


def test_absent_deletes_only_the_amis_own_snapshots(run_playbook, aws_proxy, aws, snapshot_id):
    other = aws.client("ebs").start_snapshot(VolumeSize=1)["SnapshotId"]  # somebody else's snapshot
    aws.client("ebs").complete_snapshot(SnapshotId=other, ChangedBlocksCount=0)
    first = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS)
    assert first.rc == 0, first.stdout
    image_id = first.task("Register the AMI")["image_id"]
    # Anyone with ec2:CreateTags can point the tag elsewhere.
    aws.client("ec2").create_tags(Resources=[image_id], Tags=[{"Key": "attestable:SnapshotId", "Value": other}])
    gone = register(run_playbook, aws_proxy, state="absent", delete_snapshots=True)
    assert gone.rc == 0, gone.stdout
    assert gone.task("Register the AMI")["deleted_snapshots"] == [snapshot_id]
    assert other in aws.snapshot_ids() and snapshot_id not in aws.snapshot_ids()
    assert [c["SnapshotId"] for c in aws_proxy.calls("DeleteSnapshot")] == [snapshot_id]


def test_failed_share_removes_the_copies_and_their_snapshots(run_playbook, aws_proxy, aws, snapshot_id):
    source_images, copy_images = aws.image_ids(), aws.image_ids("eu-west-1")
    copy_snapshots = aws.snapshot_ids("eu-west-1")
    aws_proxy.inject(r"Action=ModifyImageAttribute$", [(400, "InvalidOrganizationArn")], forever=True)
    run = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS,
                   regions=["eu-west-1"], launch_permissions=[ORG])
    assert run.rc != 0
    assert "Failed to share" in run.task("Register the AMI")["msg"]
    assert len(aws_proxy.calls("CopyImage")) == 1 and len(aws_proxy.calls("DeregisterImage")) == 2
    assert aws.image_ids() == source_images and aws.image_ids("eu-west-1") == copy_images
    assert aws.snapshot_ids("eu-west-1") == copy_snapshots  # the copy's snapshot went with it
    assert snapshot_id in aws.snapshot_ids()  # the caller's snapshot stays


@pytest.mark.parametrize("wait", [True, False])
def test_new_amis_answering_not_found_are_retried(run_playbook, aws_proxy, aws, snapshot_id, wait):
    rules = [aws_proxy.fail_new(NEW_IMAGE, IMAGE_ID, r"Action=%s$" % action, "InvalidAMIID.NotFound", count)
             for action, count in (("DescribeImages", 2), ("CreateTags", 1), ("DescribeImageAttribute", 1),
                                   ("ModifyImageAttribute", 1))]
    run = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS, wait=wait,
                   regions=["eu-west-1"], launch_permissions=[ACCOUNT])
    assert run.rc == 0, run.stdout
    images = run.task("Register the AMI")["images"]
    assert [rule.hits for rule in rules] == [4, 2, 2, 2]  # every new AMI (source and copy) answered NotFound
    assert aws_proxy.calls("DeregisterImage") == []
    for region, image_id in images.items():
        assert tags_of(aws, image_id, region)["attestable:PCR4"] == MEASUREMENTS["PCR4"]
        perms = aws.client("ec2", region).describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
        assert perms["LaunchPermissions"] == [{"UserId": ACCOUNT}]


@pytest.mark.parametrize("dropped", ["TpmSupport", "UefiData", "BootMode", "ImdsSupport"])
def test_copy_that_lost_an_attribute_is_removed(run_playbook, aws_proxy, aws, snapshot_id, dropped):
    aws_proxy.copy_drops = {dropped}
    copy_images, copy_snapshots = aws.image_ids("eu-west-1"), aws.snapshot_ids("eu-west-1")
    run = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS,
                   uefi_data=uefi_store(), regions=["eu-west-1"])
    assert run.rc != 0
    msg = run.task("Register the AMI")["msg"]
    assert "lost %s" % dropped in msg and "deregistered and its snapshots deleted" in msg
    assert aws.image_ids("eu-west-1") == copy_images and aws.snapshot_ids("eu-west-1") == copy_snapshots
    assert aws_proxy.calls("ModifyImageAttribute") == []


def test_purge_tags_removes_tags_others_set_but_keeps_the_attestable_ones(run_playbook, aws_proxy, aws, snapshot_id):
    first = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS)
    assert first.rc == 0, first.stdout
    image_id = first.task("Register the AMI")["image_id"]
    wanted = tags_of(aws, image_id)
    aws.client("ec2").create_tags(Resources=[image_id], Tags=[{"Key": "Owner", "Value": "someone"}])

    kept = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS)
    assert kept.rc == 0, kept.stdout
    assert kept.task("Register the AMI")["changed"] is False and tags_of(aws, image_id)["Owner"] == "someone"

    purged = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS, purge_tags=True)
    assert purged.rc == 0, purged.stdout
    assert purged.task("Register the AMI")["changed"] is True
    assert tags_of(aws, image_id) == wanted  # the user's and the attestable: tags, nothing else
    again = register(run_playbook, aws_proxy, snapshot_id=snapshot_id, measurements=MEASUREMENTS, purge_tags=True)
    assert again.rc == 0, again.stdout
    assert again.task("Register the AMI")["changed"] is False

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
import base64
import hashlib
import struct
import zlib

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._aws import ami_registration as reg


def pcr(text):
    return hashlib.sha384(text.encode()).hexdigest()


MEASUREMENTS = {"HashAlgorithm": "SHA384", "PCR4": pcr("4"), "PCR7": pcr("7"), "PCR12": pcr("12"),
                "engines": ["nitro-tpm-pcr-compute"], "boot_mode": "standard"}
SNAP = "snap-0123456789abcdef0"


def test_measurement_tags_use_the_shared_keys_and_round_trip():
    tags = reg.measurement_tags(MEASUREMENTS)
    assert tags == {"attestable:HashAlgorithm": "SHA384", "attestable:PCR4": MEASUREMENTS["PCR4"],
                    "attestable:PCR7": MEASUREMENTS["PCR7"], "attestable:PCR12": MEASUREMENTS["PCR12"]}
    back = reg.measurements_from_tags(dict(tags, Name="x", **{"attestable:SnapshotId": SNAP}))
    assert back == {"HashAlgorithm": "SHA384", "PCR4": MEASUREMENTS["PCR4"], "PCR7": MEASUREMENTS["PCR7"],
                    "PCR12": MEASUREMENTS["PCR12"]}


@pytest.mark.parametrize("measurements, message", [
    ("nope", "measurements must be a dict"),
    (dict(MEASUREMENTS, HashAlgorithm="SHA256"), "HashAlgorithm must be 'SHA384'"),
    (dict(MEASUREMENTS, PCR4="AB" * 48), "measurements.PCR4 must be 96 lowercase hex"),
    (dict(MEASUREMENTS, PCR7=pcr("7")[:-1]), "measurements.PCR7 must be 96 lowercase hex"),
    ({"HashAlgorithm": "SHA384"}, "holds no PCR values"),
])
def test_bad_measurements_are_named(measurements, message):
    with pytest.raises(reg.RegistrationError, match=message):
        reg.measurement_tags(measurements)


def test_register_request_has_every_nitrotpm_uefi_field():
    uefi = store()
    tags = reg.image_tags({"Name": "a"}, MEASUREMENTS, SNAP)
    request = reg.build_register_request("attestable-1.0.0", SNAP, "arm64", tags, volume_size=4, uefi_data=uefi,
                                         description="d")
    assert request["BootMode"] == "uefi"
    assert request["TpmSupport"] == "v2.0"
    assert request["ImdsSupport"] == "v2.0"
    assert request["EnaSupport"] is True
    assert request["VirtualizationType"] == "hvm"
    assert request["Architecture"] == "arm64"
    assert request["RootDeviceName"] == "/dev/xvda"
    assert request["UefiData"] == uefi
    assert request["BlockDeviceMappings"] == [{"DeviceName": "/dev/xvda", "Ebs": {
        "SnapshotId": SNAP, "VolumeType": "gp3", "VolumeSize": 4, "DeleteOnTermination": True}}]
    spec = request["TagSpecifications"]
    assert spec[0]["ResourceType"] == "image"
    assert reg.tag_dict(spec[0]["Tags"])["attestable:PCR12"] == MEASUREMENTS["PCR12"]
    assert reg.tag_dict(spec[0]["Tags"])["attestable:SnapshotId"] == SNAP
    assert "ImdsSupport" not in reg.build_register_request("abc", SNAP, "x86_64", {}, imds_support="optional")
    assert "UefiData" not in reg.build_register_request("abc", SNAP, "x86_64", {})


@pytest.mark.parametrize("call, message", [
    (lambda: reg.build_register_request("abc", SNAP, "sparc", {}), "architecture: expected one of x86_64, arm64"),
    (lambda: reg.build_register_request("a", SNAP, "x86_64", {}), "name: 'a' is not a valid AMI name"),
    (lambda: reg.build_register_request("abc", "vol-1", "x86_64", {}), "snapshot_id: expected a snapshot id"),
    (lambda: reg.validate_uefi_data("not base64 !"), "uefi_data: expected the base64"),
    (lambda: reg.validate_uefi_data(""), "uefi_data: the UEFI variable store is empty"),
    (lambda: reg.image_tags({"attestable:PCR4": "x"}, None, SNAP), "reserved prefix"),
    (lambda: reg.validate_regions(["mars-1"], "us-east-1"), "regions: 'mars-1' is not an AWS region"),
])
def test_bad_inputs_are_named(call, message):
    with pytest.raises(reg.RegistrationError, match=message):
        call()


def test_regions_drop_the_source_and_duplicates():
    assert reg.validate_regions(["eu-west-1", "us-east-1", "eu-west-1", "us-gov-west-1"], "us-east-1") == [
        "eu-west-1", "us-gov-west-1"]


def test_image_differences():
    tags = reg.image_tags({"Name": "a"}, MEASUREMENTS, SNAP)
    image = {"ImageId": "ami-1", "Architecture": "x86_64", "Tags": reg.tag_list(dict(tags, Name="changed"))}
    assert reg.image_differences(image, tags, "x86_64") == []
    other = reg.image_tags({}, dict(MEASUREMENTS, PCR4=pcr("other")), SNAP)
    assert reg.image_differences(image, other, "x86_64") == [
        "tag attestable:PCR4 is %r, wanted %r" % (MEASUREMENTS["PCR4"], pcr("other"))]
    fewer = dict(MEASUREMENTS)
    del fewer["PCR12"]
    assert any("attestable:PCR12" in p for p in reg.image_differences(image, reg.image_tags({}, fewer, SNAP)))
    assert reg.image_differences(image, reg.image_tags({}, fewer, SNAP), check_measurements=False) == []
    moved = reg.image_tags({}, MEASUREMENTS, "snap-0fedcba9876543210")
    assert any("attestable:SnapshotId" in p for p in reg.image_differences(image, moved))
    assert reg.image_differences(image, tags, "arm64") == ["architecture is x86_64, wanted arm64"]


def test_launch_permissions_parse_and_diff():
    org = "arn:aws:organizations::123456789012:organization/o-abcdefghij"
    ou = "arn:aws:organizations::123456789012:ou/o-abcdefghij/ou-ab12-cdefghij"
    wanted = reg.parse_launch_permissions(["111122223333", org, ou, "111122223333"])
    assert len(wanted) == 3
    assert {"UserId": "111122223333"} in wanted and {"OrganizationArn": org} in wanted
    assert {"OrganizationalUnitArn": ou} in wanted
    add, remove = reg.launch_permission_changes([{"UserId": "999988887777"}, {"Group": "all"},
                                                 {"OrganizationArn": org}], wanted)
    assert add == sorted([{"UserId": "111122223333"}, {"OrganizationalUnitArn": ou}], key=lambda e: sorted(e.items()))
    assert {"Group": "all"} in remove and {"UserId": "999988887777"} in remove and len(remove) == 2
    assert reg.launch_permission_changes(wanted, list(reversed(wanted))) == ([], [])
    assert reg.permission_strings(wanted) == sorted(["111122223333", org, ou])
    for bad in ["all", "12345", "arn:aws:iam::123456789012:root"]:
        with pytest.raises(reg.RegistrationError, match="launch_permissions"):
            reg.parse_launch_permissions([bad])


def test_snapshots_of_reads_only_the_mappings_never_the_tag():
    image = {"BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-aaaaaaaa"}},
                                     {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}],
             "Tags": [{"Key": "attestable:SnapshotId", "Value": SNAP}]}
    assert reg.snapshots_of(image) == ["snap-aaaaaaaa"]
    assert reg.snapshots_of({"Tags": [{"Key": "attestable:SnapshotId", "Value": SNAP}]}) == []


def test_crc32c_check_values():
    assert reg.crc32c(b"123456789") == 0xE3069283  # RFC 3720 / the CRC catalogue's check value
    assert reg.crc32c(b"") == 0
    assert reg.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros


def store(payload=b"variables", version=0, crc=None, magic=b"AMZNUEFI", compress=True):
    body = struct.pack("<I", version) + (zlib.compress(payload) if compress else payload)
    crc = reg.crc32c(body) if crc is None else crc
    return base64.b64encode(magic + struct.pack("<I", crc) + body).decode()


@pytest.mark.parametrize("blob, message", [
    (store(magic=b"AMZNUEFX"), "does not start with the magic 'AMZNUEFI'"),
    (store(crc=1), "header says 0x00000001"),
    (store(version=1), "version 1"),
    (store(compress=False, payload=b"\x00\x00 not zlib"), "payload is not a zlib stream"),
    (base64.b64encode(b"AMZNUEFI").decode(), "does not start with the magic"),
    ("A" * 64004, "64004 characters; RegisterImage accepts at most 64000"),
])
def test_uefi_data_is_checked(blob, message):
    with pytest.raises(reg.RegistrationError, match=message):
        reg.validate_uefi_data(blob)


def test_uefi_data_within_the_limit_passes():
    good = store(payload=bytes(range(256)) * 40)
    assert reg.validate_uefi_data(good) == good
    # 64,000 characters is the limit, not 65,536: a blob just above it is refused before decoding.
    big = store(payload=hashlib.sha512(b"x").digest() * 1, compress=True)
    assert len(big) < reg.UEFI_DATA_MAX_CHARS
    with pytest.raises(reg.RegistrationError, match="at most 64000"):
        reg.validate_uefi_data("A" * (reg.UEFI_DATA_MAX_CHARS + 4))


def test_copy_losses_name_what_a_copy_dropped():
    source = {"ImageId": "ami-1", "BootMode": "uefi", "TpmSupport": "v2.0", "ImdsSupport": "v2.0"}
    assert reg.copy_losses(source, dict(source, ImageId="ami-2")) == []
    assert reg.copy_losses(source, {"BootMode": "uefi", "ImdsSupport": "v2.0"}) == ["TpmSupport (v2.0 -> none)"]
    assert reg.copy_losses(source, dict(source, BootMode="legacy-bios")) == ["BootMode (uefi -> legacy-bios)"]
    assert reg.copy_losses({"BootMode": "uefi"}, {"BootMode": "uefi"}) == []  # what the source lacks is not lost
    assert reg.copy_losses(source, source, "QUJD", None) == ["UefiData (4 characters -> none)"]
    assert reg.copy_losses(source, source, "QUJD", "QUJE") == ["UefiData (4 characters -> 4 different characters)"]
    assert reg.copy_losses(source, source, "QUJD", "QUJD") == []


def test_suggested_name_stays_valid():
    assert reg.suggested_name("attestable-1.0.0", SNAP) == "attestable-1.0.0-0123456789abcdef0"
    long_name = "n" * 128
    assert len(reg.suggested_name(long_name, SNAP)) == 128
    reg.validate_name(reg.suggested_name(long_name, SNAP))

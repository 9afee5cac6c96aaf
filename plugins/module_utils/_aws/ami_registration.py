# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""RegisterImage requests for NitroTPM/UEFI AMIs, the tags that carry reference measurements, and the
comparisons that make image_register idempotent. Plain Python, no Ansible imports.

Tags written on every AMI (source and copies) so that a later run can start from an AMI id alone:
    attestable:HashAlgorithm = SHA384, attestable:PCR<n> = <96 hex> (one per PCR measured),
    attestable:SnapshotId    = the snapshot the source AMI was registered from.
"""

import base64
import binascii
import re
import struct

from ansible_collections.attestable.ami.plugins.module_utils._common import architectures, measurements as meas

TAG_PREFIX = meas.TAG_PREFIX
HASH_ALGORITHM_TAG = meas.HASH_ALGORITHM_TAG
SNAPSHOT_TAG = meas.SNAPSHOT_TAG
ARCHITECTURES = architectures.ACCEPTED  # x86_64, arm64, aarch64; EC2 is given its own name (arm64)

_NAME = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
_SNAPSHOT_ID = re.compile(r"^snap-[0-9a-f]{8,17}$")
_ACCOUNT_ID = re.compile(r"^[0-9]{12}$")
_ORG_ARN = re.compile(r"^arn:aws[a-z-]*:organizations::[0-9]{12}:organization/o-[a-z0-9]{10,32}$")
_OU_ARN = re.compile(r"^arn:aws[a-z-]*:organizations::[0-9]{12}:ou/o-[a-z0-9]{10,32}/ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]$")


class RegistrationError(ValueError):
    """An input for registration is not what is expected; the message names it."""


def measurement_tags(measurements):
    """{"attestable:HashAlgorithm": "SHA384", "attestable:PCR4": ..., ...} for a pcr_compute result."""
    try:
        return meas.to_tags(measurements, "measurements")
    except meas.MeasurementError as exc:
        raise RegistrationError(str(exc))


def measurements_from_tags(tags):
    """The inverse of measurement_tags: {"HashAlgorithm": ..., "PCR4": ...} from an AMI's tags ({} if none)."""
    return meas.from_tags(tags)


def validate_name(name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise RegistrationError(
            "name: %r is not a valid AMI name (3-128 characters: letters, digits, spaces and ( ) [ ] . / - ' @ _)"
            % (name,))
    return name


def validate_architecture(architecture):
    """EC2's name (x86_64 or arm64) for an accepted spelling."""
    try:
        return architectures.name_for(architecture, "aws")
    except architectures.ArchitectureError:
        raise RegistrationError("architecture: expected one of %s, got %r" % (", ".join(ARCHITECTURES), architecture))


def validate_snapshot_id(snapshot_id):
    if not isinstance(snapshot_id, str) or not _SNAPSHOT_ID.match(snapshot_id):
        raise RegistrationError("snapshot_id: expected a snapshot id like snap-0123456789abcdef0, got %r"
                                % (snapshot_id,))
    return snapshot_id


# EC2's API model: UefiData is 0 to 64,000 characters of base64.
UEFI_DATA_MAX_CHARS = 64000
# The blob python-uefivars writes (its aws.py, the format RegisterImage takes): "AMZNUEFI" (8 bytes), CRC32C
# (4 bytes, little endian) of everything after this field, a version (4 bytes, little endian, 0), then a zlib
# stream compressed with a preset dictionary (not checked further here: it needs python-uefivars' dictionary).
UEFI_MAGIC = b"AMZNUEFI"
UEFI_HEADER = struct.Struct("<8sII")


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _bit in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli, as in iSCSI/RFC 3720), pure Python; crc32c(b"123456789") == 0xE3069283."""
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in bytearray(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def validate_uefi_data(uefi_data):
    """The base64 AWS UEFI variable store, checked as far as its format is known; RegistrationError otherwise."""
    if uefi_data is None:
        return None
    if len(uefi_data) > UEFI_DATA_MAX_CHARS:
        raise RegistrationError("uefi_data: %d characters; RegisterImage accepts at most %d"
                                % (len(uefi_data), UEFI_DATA_MAX_CHARS))
    try:
        raw = base64.b64decode(uefi_data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise RegistrationError("uefi_data: expected the base64 UEFI variable store (as written by "
                                "python-uefivars), got text that is not base64")
    if not raw:
        raise RegistrationError("uefi_data: the UEFI variable store is empty")
    if len(raw) < UEFI_HEADER.size + 2 or not raw.startswith(UEFI_MAGIC):
        raise RegistrationError("uefi_data: not an AWS UEFI variable store: it does not start with the magic "
                                "'AMZNUEFI' (write it with python-uefivars: uefivars -i edk2 -o aws ...)")
    _magic, stored_crc, version = UEFI_HEADER.unpack_from(raw)
    computed = crc32c(raw[12:])
    if computed != stored_crc:
        raise RegistrationError("uefi_data: the variable store's CRC32C is 0x%08x but its header says 0x%08x: the "
                                "data is truncated or altered" % (computed, stored_crc))
    if version != 0:
        raise RegistrationError("uefi_data: variable store version %d; RegisterImage knows version 0" % version)
    cmf, flg = bytearray(raw[UEFI_HEADER.size:UEFI_HEADER.size + 2])
    if cmf & 0x0F != 8 or (cmf * 256 + flg) % 31:
        raise RegistrationError("uefi_data: the variable store's payload is not a zlib stream")
    return uefi_data


def validate_regions(regions, source_region):
    result = []
    for region in regions or []:
        if not isinstance(region, str) or not _REGION.match(region):
            raise RegistrationError("regions: %r is not an AWS region name (like eu-west-1)" % (region,))
        if region != source_region and region not in result:
            result.append(region)
    return result


def image_tags(user_tags, measurements, snapshot_id):
    """All tags an AMI gets: the user's, the measurements (if any) and the source snapshot."""
    tags = {}
    for key, value in (user_tags or {}).items():
        if key.startswith(TAG_PREFIX):
            raise RegistrationError("tags: %r uses the reserved prefix %r (those tags are written from "
                                    "measurements and snapshot_id)" % (key, TAG_PREFIX))
        tags[key] = str(value)
    if measurements is not None:
        tags.update(measurement_tags(measurements))
    if snapshot_id:
        tags[SNAPSHOT_TAG] = snapshot_id
    return tags


def build_register_request(name, snapshot_id, architecture, tags, root_device_name="/dev/xvda",
                           volume_size=None, volume_type="gp3", description=None, uefi_data=None,
                           boot_mode="uefi", tpm_support="v2.0", ena_support=True, imds_support="v2.0"):
    """Keyword arguments for EC2 RegisterImage."""
    ebs = {"SnapshotId": validate_snapshot_id(snapshot_id), "DeleteOnTermination": True}
    if volume_type:
        ebs["VolumeType"] = volume_type
    if volume_size:
        ebs["VolumeSize"] = int(volume_size)
    request = {
        "Name": validate_name(name),
        "Architecture": validate_architecture(architecture),
        "VirtualizationType": "hvm",
        "RootDeviceName": root_device_name,
        "BlockDeviceMappings": [{"DeviceName": root_device_name, "Ebs": ebs}],
        "EnaSupport": bool(ena_support),
        "BootMode": boot_mode,
        "TpmSupport": tpm_support,
    }
    if imds_support == "v2.0":
        request["ImdsSupport"] = "v2.0"
    if description:
        request["Description"] = description
    if uefi_data:
        request["UefiData"] = validate_uefi_data(uefi_data)
    if tags:
        request["TagSpecifications"] = [{"ResourceType": "image", "Tags": tag_list(tags)}]
    return request


def build_copy_request(name, source_image_id, source_region, tags, description=None):
    request = {"Name": name, "SourceImageId": source_image_id, "SourceRegion": source_region}
    if description:
        request["Description"] = description
    if tags:
        request["TagSpecifications"] = [{"ResourceType": "image", "Tags": tag_list(tags)}]
    return request


def tag_list(tags):
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tag_dict(tag_list_):
    return dict((t["Key"], t["Value"]) for t in tag_list_ or [])


def image_differences(image, desired_tags, architecture=None, check_measurements=True):
    """Why an existing AMI (a DescribeImages entry) is not the one wanted; [] when it is.

    Identity is the source snapshot and the measurements, read from the image's attestable: tags, plus the
    attributes EC2 reports (architecture, boot mode, TPM support) where it reports them.
    """
    current = tag_dict(image.get("Tags"))
    architecture = validate_architecture(architecture) if architecture else architecture
    problems = []
    keys = [SNAPSHOT_TAG]
    if check_measurements:
        keys += sorted(set(k for k in list(desired_tags) + list(current) if meas.is_measurement_tag(k)))
    for key in keys:
        if current.get(key) != desired_tags.get(key):
            problems.append("tag %s is %r, wanted %r" % (key, current.get(key), desired_tags.get(key)))
    if architecture and image.get("Architecture") and image["Architecture"] != architecture:
        problems.append("architecture is %s, wanted %s" % (image["Architecture"], architecture))
    if image.get("TpmSupport") and image["TpmSupport"] != "v2.0":
        problems.append("TPM support is %s, wanted v2.0" % image["TpmSupport"])
    return problems


def parse_launch_permissions(items):
    """Turn account ids / organization ARNs / OU ARNs into LaunchPermission entries, sorted and unique."""
    entries = []
    for item in items or []:
        item = str(item).strip()
        if _ACCOUNT_ID.match(item):
            entry = {"UserId": item}
        elif _ORG_ARN.match(item):
            entry = {"OrganizationArn": item}
        elif _OU_ARN.match(item):
            entry = {"OrganizationalUnitArn": item}
        else:
            raise RegistrationError(
                "launch_permissions: %r is neither a 12-digit account id, an organization ARN "
                "(arn:aws:organizations::<account>:organization/o-...) nor an OU ARN "
                "(arn:aws:organizations::<account>:ou/o-.../ou-...); public sharing is not offered" % (item,))
        if entry not in entries:
            entries.append(entry)
    return sorted(entries, key=_permission_key)


def _permission_key(entry):
    return sorted(entry.items())


def launch_permission_changes(current, desired):
    """(add, remove) turning the current LaunchPermissions into exactly the desired ones."""
    current = [dict(p) for p in current or []]
    add = [p for p in desired if p not in current]
    remove = [p for p in current if p not in desired]
    return sorted(add, key=_permission_key), sorted(remove, key=_permission_key)


def permission_strings(entries):
    """LaunchPermission entries back to the strings users write (for results and diffs)."""
    out = []
    for entry in entries:
        out.append(entry.get("UserId") or entry.get("OrganizationArn") or entry.get("OrganizationalUnitArn")
                   or "group:%s" % entry.get("Group"))
    return sorted(out)


def snapshots_of(image):
    """Snapshot ids in an AMI's own block device mappings (what the AMI really uses).

    Never the attestable:SnapshotId tag: anyone with ec2:CreateTags can point it at another snapshot."""
    found = []
    for mapping in image.get("BlockDeviceMappings") or []:
        snap = (mapping.get("Ebs") or {}).get("SnapshotId")
        if snap and snap not in found:
            found.append(snap)
    return found


# Attributes a copy must keep (DescribeImages field names); CopyImage has been seen to drop them.
COPY_ATTRIBUTES = ("BootMode", "TpmSupport", "ImdsSupport")


def copy_losses(source, copy, uefi_data=None, copy_uefi_data=None):
    """What a copy lost compared with its source (DescribeImages entries), e.g. ["TpmSupport (v2.0 -> none)"].

    An attribute the source reports must be reported with the same value by the copy; with uefi_data (what was
    registered), the copy's UefiData must equal it."""
    losses = []
    for key in COPY_ATTRIBUTES:
        wanted = (source.get(key) or {}).get("Value") if isinstance(source.get(key), dict) else source.get(key)
        if wanted is None:
            continue
        got = (copy.get(key) or {}).get("Value") if isinstance(copy.get(key), dict) else copy.get(key)
        if got != wanted:
            losses.append("%s (%s -> %s)" % (key, wanted, got or "none"))
    if uefi_data is not None and copy_uefi_data != uefi_data:
        losses.append("UefiData (%d characters -> %s)" % (
            len(uefi_data), "%d different characters" % len(copy_uefi_data) if copy_uefi_data else "none"))
    return losses


def suggested_name(name, snapshot_id):
    """A new AMI name for the same build: the old one plus the snapshot's id (unique per upload), <= 128 chars."""
    suffix = "-" + (snapshot_id or "").replace("snap-", "")[:17]
    return name[:128 - len(suffix)] + suffix

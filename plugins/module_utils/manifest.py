# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attestation manifest: one JSON record that every pipeline stage reads and extends.

Plain Python (3.9+), no Ansible imports. Layout (schema_version 1):

    {
      "schema_version": 1,
      "image":        {"name", "version", "architecture", "disk", "disk_sha256", "uki", "uki_sha256",
                       "description_digest", "kiwi_version", "packages": [...], "root_hash"},
      "measurements": {"HashAlgorithm": "SHA384", "PCR4", "PCR7", "PCR12", "engines": [...], "boot_mode"},
      "snapshot":     {"snapshot_id", "region", "image_sha256", "volume_size"},
      "amis":         {"<region>": "ami-..."},
      "kms":          [{"key_id", "key_arn", "region", "statement_id", "image"}]
    }

Every section is optional; a stage replaces the sections it owns and leaves the others as they are.
"""

import copy
import json
import re

from ansible_collections.attestable.ami.plugins.module_utils._common import architectures, atomic_file
from ansible_collections.attestable.ami.plugins.module_utils._common import measurements as _measurements

SCHEMA_VERSION = 1

SECTION_TYPES = {
    "image": dict,
    "measurements": dict,
    "snapshot": dict,
    "amis": dict,
    "kms": list,
}

PCR_KEY = _measurements.PCR_KEY  # kept for importers; defined in _common/measurements.py
BOOT_MODES = _measurements.BOOT_MODES
_AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
_STATEMENT_ID = re.compile(r"^AttestableAMI-[A-Za-z0-9_-]+$")


class ManifestError(ValueError):
    """The manifest, or a section given for it, is not what the schema expects."""


def validate_measurements(measurements, where="measurements"):
    """Check a measurements dict in nitro-tpm-pcr-compute's format (extra keys such as engines allowed); the rules
    are _common/measurements.validate's."""
    try:
        return _measurements.validate(measurements, where)
    except _measurements.MeasurementError as exc:
        raise ManifestError(str(exc))


def validate_kms_entry(entry, where):
    """One record of the kms section: a key policy statement kms_authorize wrote for an image."""
    if not isinstance(entry, dict):
        raise ManifestError("%s must be a dict with key_id and statement_id, got %r" % (where, entry))
    for field in ("key_id", "statement_id"):
        if not isinstance(entry.get(field), str) or not entry[field]:
            raise ManifestError("%s.%s must be a non-empty string, got %r" % (where, field, entry.get(field)))
    if not _STATEMENT_ID.match(entry["statement_id"]):
        raise ManifestError("%s.statement_id must be a Sid this collection owns (AttestableAMI-...), got %r"
                            % (where, entry["statement_id"]))
    if "key_arn" in entry and not (isinstance(entry["key_arn"], str) and _KMS_KEY_ARN.match(entry["key_arn"])):
        raise ManifestError("%s.key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), got %r"
                            % (where, entry["key_arn"]))
    if "region" in entry and not (isinstance(entry["region"], str) and _REGION.match(entry["region"])):
        raise ManifestError("%s.region must be an AWS region such as eu-west-1, got %r" % (where, entry["region"]))
    if "image" in entry and not (isinstance(entry["image"], str) and entry["image"]):
        raise ManifestError("%s.image must be a non-empty string (the AMI id or name), got %r"
                            % (where, entry["image"]))
    if "key_arn" in entry and "region" in entry and entry["key_arn"].split(":")[3] != entry["region"]:
        raise ManifestError("%s: region %r differs from the region of key_arn %r"
                            % (where, entry["region"], entry["key_arn"]))
    return entry


def validate(manifest, where="manifest"):
    """Validate a whole manifest; returns it unchanged or raises ManifestError naming the field at fault."""
    if not isinstance(manifest, dict):
        raise ManifestError("%s must be a JSON object, got %s" % (where, type(manifest).__name__))
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError("%s.schema_version is %r; this collection reads version %d"
                            % (where, version, SCHEMA_VERSION))
    for name, value in manifest.items():
        if name == "schema_version":
            continue
        validate_section(name, value, where)
    return manifest


def validate_section(name, value, where="manifest"):
    expected = SECTION_TYPES.get(name)
    if expected is None:
        raise ManifestError("%s has an unknown section %r (known: %s)"
                            % (where, name, ", ".join(sorted(SECTION_TYPES))))
    if not isinstance(value, expected):
        raise ManifestError("%s.%s must be a %s, got %s"
                            % (where, name, "list" if expected is list else "dict", type(value).__name__))
    if name == "measurements":
        validate_measurements(value, "%s.measurements" % where)
    elif name == "image" and "architecture" in value:
        try:  # kept as written (x86_64, arm64 or aarch64); consumers map it with _common/architectures
            architectures.canonical(value["architecture"], "%s.image.architecture" % where)
        except architectures.ArchitectureError as exc:
            raise ManifestError(str(exc))
    elif name == "amis":
        for region, ami in value.items():
            if not isinstance(ami, str) or not _AMI_ID.match(ami):
                raise ManifestError("%s.amis.%s must be an AMI id (ami-...), got %r" % (where, region, ami))
    elif name == "kms":
        for i, entry in enumerate(value):
            validate_kms_entry(entry, "%s.kms[%d]" % (where, i))


def new():
    return {"schema_version": SCHEMA_VERSION}


class ManifestFileError(ManifestError, OSError):
    """The manifest path is not a regular file or cannot be read or written (both a ManifestError and an OSError,
    so callers catching either report it); the message names the path."""


def load(path):
    """Read a manifest file; a missing file is an empty manifest. Directories, FIFOs, symlinks... are refused."""
    try:
        text = atomic_file.read_text(path)
    except (IOError, OSError) as exc:
        raise ManifestFileError("manifest %s" % exc if str(path) in str(exc) else "manifest %s: %s" % (path, exc))
    if text is None:
        return new()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError("%s is not valid JSON: %s" % (path, exc))
    return validate(data, where=path)


def update(manifest, sections):
    """Return a copy of manifest with the given top-level sections replaced (None removes a section)."""
    result = copy.deepcopy(manifest)
    for name, value in sections.items():
        if value is None:
            if name not in SECTION_TYPES:
                raise ManifestError("unknown section %r (known: %s)" % (name, ", ".join(sorted(SECTION_TYPES))))
            result.pop(name, None)
            continue
        validate_section(name, value, where="sections")
        result[name] = copy.deepcopy(value)
    return result


def dumps(manifest):
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def write(path, manifest):
    """Write atomically (an existing file keeps its mode); returns True when the file content changed."""
    text = dumps(validate(manifest, where=path))
    try:
        return atomic_file.write_text(path, text)
    except (IOError, OSError) as exc:
        raise ManifestFileError("manifest %s" % exc if str(path) in str(exc) else "manifest %s: %s" % (path, exc))

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a reference measurement is, in one place: every module, filter and module_utils file that reads, checks,
tags or compares PCR values uses this module. Plain Python (3.9+), no Ansible imports.

Measurements are in the format of AWS's ``nitro-tpm-pcr-compute`` (what pcr_compute returns)::

    {"HashAlgorithm": "SHA384", "PCR4": "<96 hex>", "PCR7": "<96 hex>", "PCR12": "<96 hex>",
     "boot_mode": "standard" | "secure_boot", "engines": [...]}          # the last two optional

- A PCR key is ``PCR0`` to ``PCR23``, spelled exactly so (``is_pcr_key``). Lists of PCRs to bind may be looser
  (``PCR4``, ``pcr4``, ``4``: ``pcr_name``).
- A PCR value is a SHA-384 digest: 96 hex characters. The canonical form is lowercase; ``validate`` (the
  manifest, AMI tags) takes only that, ``normalize`` lowercases first (what the user gives to kms_attestation_policy,
  what the AWS tool prints, what measured_boot compares).
- ``HashAlgorithm`` is ``SHA384``, the only bank AWS's attestation uses.
- The boot mode is ``standard`` or ``secure_boot`` (``secure_boot`` exactly when a PK is enrolled). It is stated,
  never inferred from PCR values, and never read from tags.

Tags. Every tag key this collection writes is listed under "Tag keys" below. The style is ``attestable:`` and a
CamelCase name: the measurement keys are the tool's own names, and most keys (and the README) use it. The
snapshot and builder keys still have the older lower-case spelling (see there).

Tags are mutable: anyone with ec2:CreateTags on the AMI can rewrite ``attestable:PCR<n>``. So tags are never a
source of the boot mode, and measurements read from them are only as good as a reference held elsewhere:

- ``attestable:MeasurementsSHA384`` (written beside the measurement tags) holds ``measurements_digest``: the
  SHA-384 (lowercase hex) of the canonical form below. Whoever rewrites the PCR tags can rewrite this tag too,
  so it proves nothing by itself; its value is that a short reference (the digest, kept in the manifest or
  handed over by whoever published the image) checks every PCR tag and the AMI id at once.
- Canonical form: the UTF-8 JSON text of an object with ``ami_id`` (the AMI the tags are on, so a digest cannot
  be moved to another AMI), ``HashAlgorithm`` and every ``PCR<n>`` of the measurements (lowercase hex), keys
  sorted, no whitespace (``json.dumps(..., sort_keys=True, separators=(",", ":"))``).
- ``attestable:UkiSHA256`` may name the UKI's SHA-256; comparing it with an expected value catches a mix-up of
  AMIs, not a deliberate edit.
"""

import hashlib
import json
import re

HASH_ALGORITHM_KEY = "HashAlgorithm"
HASH_ALGORITHM = "SHA384"
BOOT_MODE_KEY = "boot_mode"
STANDARD = "standard"
SECURE_BOOT = "secure_boot"
BOOT_MODES = (STANDARD, SECURE_BOOT)
REFERENCE_PCRS = ("PCR4", "PCR7", "PCR12")  # what pcr_compute and nitro-tpm-pcr-compute report

PCR_KEY = re.compile(r"^PCR([0-9]|1[0-9]|2[0-3])\Z")
PCR_NAME = re.compile(r"^(?:PCR)?([0-9]|1[0-9]|2[0-3])\Z", re.IGNORECASE)
HEX96 = re.compile(r"^[0-9a-f]{96}\Z")  # \Z: "$" would let a trailing newline through
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}\Z")
EXAMPLE = "{'HashAlgorithm': 'SHA384', 'PCR4': '<96 hex>', 'PCR7': '<96 hex>', 'PCR12': '<96 hex>'}"

# ---- Tag keys ---------------------------------------------------------------------------------------------
# Every key the collection writes. AMIs (image_register): the measurements, their digest, the source snapshot.
TAG_PREFIX = "attestable:"
HASH_ALGORITHM_TAG = TAG_PREFIX + HASH_ALGORITHM_KEY
DIGEST_TAG = TAG_PREFIX + "MeasurementsSHA384"
UKI_TAG = TAG_PREFIX + "UkiSHA256"
SNAPSHOT_TAG = TAG_PREFIX + "SnapshotId"
# Snapshots (snapshot_upload): the uploaded image's SHA-256 and size.
IMAGE_SHA256_TAG = TAG_PREFIX + "ImageSHA256"
IMAGE_SIZE_TAG = TAG_PREFIX + "ImageSize"
# Builder instances, security groups and key pairs: written and read by roles/builder's Jinja (which cannot import
# this); listed so the inventory is whole. Teardown finds a run's resources by them.
BUILDER_RUN_ID_TAG = TAG_PREFIX + "RunId"
BUILDER_ROLE_TAG = TAG_PREFIX + "Role"
TAG_KEYS = (HASH_ALGORITHM_TAG, TAG_PREFIX + "PCR<n>", DIGEST_TAG, UKI_TAG, SNAPSHOT_TAG, IMAGE_SHA256_TAG,
            IMAGE_SIZE_TAG, BUILDER_RUN_ID_TAG, BUILDER_ROLE_TAG)
# Spellings written before the keys were unified (collection < 1.1): never written now, still read, because
# snapshots and leaked builders in the wild carry them (snapshot_upload reuses such a snapshot, teardown finds
# such a builder).
LEGACY_TAG_KEYS = {
    IMAGE_SHA256_TAG: TAG_PREFIX + "image-sha256",
    IMAGE_SIZE_TAG: TAG_PREFIX + "image-size",
    BUILDER_RUN_ID_TAG: TAG_PREFIX + "run-id",
    BUILDER_ROLE_TAG: TAG_PREFIX + "role",
}


def tag_value(tags, key):
    """The value of a tag key in a {key: value} dict, under its current spelling or its legacy one."""
    if key in tags:
        return tags[key]
    return tags.get(LEGACY_TAG_KEYS.get(key, key))


_MEASUREMENT_KEY = re.compile(r"^(HashAlgorithm|PCR([0-9]|1[0-9]|2[0-3]))\Z")


class MeasurementError(ValueError):
    """Measurements, or one of their values, not in the expected form; the message names the input and what was
    expected."""


class TagError(MeasurementError):
    """Tags that contradict a reference, or a reference given in the wrong form."""


# ---- keys and values --------------------------------------------------------------------------------------

def is_pcr_key(key):
    """True for PCR0 to PCR23, spelled exactly so (not pcr4, not PCR24)."""
    return isinstance(key, str) and PCR_KEY.match(key) is not None


def pcr_index(key):
    """4 for "PCR4"; None when key is not a PCR key."""
    match = PCR_KEY.match(key) if isinstance(key, str) else None
    return int(match.group(1)) if match else None


def pcr_name(name, where="pcrs"):
    """The PCR key for a looser name: "PCR4", "pcr4", "4" or 4 give "PCR4"."""
    match = PCR_NAME.match(str(name))
    if not match:
        raise MeasurementError("%s: %r is not a PCR name; expected PCR0 to PCR23 (e.g. PCR4, PCR7, PCR12)"
                               % (where, name))
    return "PCR%d" % int(match.group(1))


def is_hash_algorithm(value, any_case=False):
    """True when value names SHA384 (in any letter case if any_case)."""
    if not isinstance(value, str):
        return False
    return (value.upper() if any_case else value) == HASH_ALGORITHM


def is_pcr_value(value, any_case=True):
    """True for 96 hex characters (lowercase only unless any_case)."""
    if not isinstance(value, str):
        return False
    return HEX96.match(value.lower() if any_case else value) is not None


def pcr_value(value, where, any_case=True):
    """value lowercased, when it is 96 hex characters; MeasurementError naming ``where`` otherwise."""
    if not is_pcr_value(value, any_case):
        raise MeasurementError("%s must be 96 %s characters (a SHA-384 digest), got %r"
                               % (where, "hexadecimal" if any_case else "lowercase hex", value))
    return value.lower()


def pcrs(measurements):
    """{PCR key: value} of the PCR keys only."""
    return dict((k, v) for k, v in measurements.items() if is_pcr_key(k))


# ---- whole measurements -----------------------------------------------------------------------------------

def validate(measurements, where="measurements"):
    """Check measurements in the canonical form (lowercase PCR values; extra keys such as engines allowed) and
    return them unchanged. At least one PCR, HashAlgorithm SHA384, a known boot_mode if there is one."""
    if not isinstance(measurements, dict):
        raise MeasurementError("%s must be a dict like %s, got %s" % (where, EXAMPLE, type(measurements).__name__))
    algo = measurements.get(HASH_ALGORITHM_KEY)
    if not is_hash_algorithm(algo):
        raise MeasurementError("%s.HashAlgorithm must be 'SHA384', got %r" % (where, algo))
    keys = [k for k in measurements if is_pcr_key(k)]
    if not keys:
        raise MeasurementError("%s holds no PCR values (expected keys such as PCR4, PCR7, PCR12)" % where)
    for key in keys:
        pcr_value(measurements[key], "%s.%s" % (where, key), any_case=False)
    if BOOT_MODE_KEY in measurements and measurements[BOOT_MODE_KEY] not in BOOT_MODES:
        raise MeasurementError("%s.boot_mode must be one of %s (as pcr_compute returns it), got %r"
                               % (where, ", ".join(BOOT_MODES), measurements[BOOT_MODE_KEY]))
    return measurements


def normalize(measurements, where="measurements"):
    """A copy of measurements with the PCR values lowercased, then validated (see validate)."""
    if isinstance(measurements, dict):
        measurements = dict((k, v.lower() if isinstance(v, str) and is_pcr_key(str(k).upper()) else v)
                            for k, v in measurements.items())
    return validate(measurements, where)


def require(measurements, keys, where="measurements"):
    """MeasurementError when one of keys (e.g. REFERENCE_PCRS) is missing."""
    missing = [k for k in keys if k not in measurements]
    if missing:
        raise MeasurementError("%s hold no value for %s (they have %s)"
                               % (where, ", ".join(missing), ", ".join(k for k in measurements if is_pcr_key(k))
                                  or "no PCR"))


# ---- boot mode --------------------------------------------------------------------------------------------

def boot_mode_for(pk):
    """"secure_boot" when a PK is given (Secure Boot is enforced exactly when a PK is enrolled), else "standard"."""
    return SECURE_BOOT if pk else STANDARD


def boot_mode(value, where="boot_mode"):
    """A stated boot mode in canonical form; also takes secure-boot, "Secure Boot", secureboot, secure."""
    normalized = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    if normalized in ("secureboot", "secure"):
        normalized = SECURE_BOOT
    if normalized not in BOOT_MODES:
        raise MeasurementError("%s must be one of %s, got %r" % (where, ", ".join(BOOT_MODES), value))
    return normalized


# ---- tags -------------------------------------------------------------------------------------------------

def is_measurement_tag(key):
    """True for attestable:HashAlgorithm and attestable:PCR<n>."""
    return (isinstance(key, str) and key.startswith(TAG_PREFIX)
            and _MEASUREMENT_KEY.match(key[len(TAG_PREFIX):]) is not None)


def to_tags(measurements, where="measurements"):
    """{"attestable:HashAlgorithm": "SHA384", "attestable:PCR4": ..., ...} for canonical measurements (validated;
    the boot mode and other keys are not tagged)."""
    validate(measurements, where)
    tags = {HASH_ALGORITHM_TAG: measurements[HASH_ALGORITHM_KEY]}
    for key, value in pcrs(measurements).items():
        tags[TAG_PREFIX + key] = value
    return tags


def from_tags(tags):
    """HashAlgorithm and PCR<n> from a {key: value} tag dict ({} if none); never the boot mode or anything else."""
    return dict((k[len(TAG_PREFIX):], v) for k, v in (tags or {}).items() if is_measurement_tag(k))


def canonical_measurements(ami_id, measurements):
    """The bytes measurements_digest hashes (see the module docstring)."""
    if not isinstance(ami_id, str) or not _AMI_ID.match(ami_id):
        raise TagError("ami_id must be an AMI id (ami- and 8 to 17 hex digits), got %r" % (ami_id,))
    if not isinstance(measurements, dict):
        raise TagError("measurements must be a dict, got %s" % type(measurements).__name__)
    record = {"ami_id": ami_id}
    for key, value in measurements.items():
        if _MEASUREMENT_KEY.match(str(key)):
            record[str(key)] = value.lower() if str(key).startswith("PCR") and isinstance(value, str) else value
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")


def measurements_digest(ami_id, measurements):
    """SHA-384 (lowercase hex) over the canonical form of the AMI id and the measurements."""
    return hashlib.sha384(canonical_measurements(ami_id, measurements)).hexdigest()


def digest_tags(ami_id, measurements):
    """{DIGEST_TAG: digest}, for whoever writes the measurement tags."""
    return {DIGEST_TAG: measurements_digest(ami_id, measurements)}


def _normalize_hex(value, pattern, what):
    text = str(value).strip().lower()
    if not pattern.match(text):
        raise TagError("%s must be %d hex characters, got %r" % (what, 96 if pattern is HEX96 else 64, value))
    return text


def cross_check(ami_id, tags, expected_digest=None, expected_uki_sha256=None):
    """Check the measurements in an AMI's tags against the references given; returns (measurements, notes).

    Raises TagError when the tags contradict a reference or themselves (a digest tag that does not match the
    PCR tags). notes say what was and was not verified (the caller warns with them)."""
    measurements = from_tags(tags)
    notes = ["the measurements of %s come from its tags, which anyone with ec2:CreateTags on the AMI can rewrite"
             % ami_id]
    computed = measurements_digest(ami_id, measurements)
    tagged = tags.get(DIGEST_TAG)
    if tagged is not None and str(tagged).strip().lower() != computed:
        raise TagError("AMI %s: its %s tag (%s) does not match its measurement tags (they hash to %s): the tags were "
                       "edited after they were written; give the measurements from the manifest or pcr_compute"
                       % (ami_id, DIGEST_TAG, tagged, computed))
    if expected_digest:
        wanted = _normalize_hex(expected_digest, HEX96, "expected_measurements_digest")
        if wanted != computed:
            raise TagError("AMI %s: its measurement tags hash to %s, not to the expected_measurements_digest %s: the "
                           "tags were changed, or this is not the AMI the digest was made for" % (ami_id, computed,
                                                                                                  wanted))
        notes.append("they match expected_measurements_digest")
    if expected_uki_sha256:
        wanted = _normalize_hex(expected_uki_sha256, _HEX64, "expected_uki_sha256")
        tagged_uki = tags.get(UKI_TAG)
        if tagged_uki is None:
            raise TagError("AMI %s has no %s tag to compare with expected_uki_sha256 %s; give the measurements (from "
                           "the manifest or pcr_compute) instead" % (ami_id, UKI_TAG, wanted))
        if str(tagged_uki).strip().lower() != wanted:
            raise TagError("AMI %s: its %s tag is %s, not the expected_uki_sha256 %s: it is not the image you meant"
                           % (ami_id, UKI_TAG, tagged_uki, wanted))
        notes.append("its %s tag matches expected_uki_sha256 (this catches a mix-up of AMIs, not an edit)" % UKI_TAG)
    if not expected_digest:
        notes.append("nothing held outside the tags vouches for them: give expected_measurements_digest (%s of "
                     "the manifest's measurements and the AMI id), the measurements themselves, or a manifest that "
                     "lists the AMI" % DIGEST_TAG)
    return measurements, notes

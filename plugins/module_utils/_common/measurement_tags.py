"""Measurements carried in an AMI's tags, and how far they can be trusted.

Plain Python (3.9+), no Ansible imports.

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

TAG_PREFIX = "attestable:"
DIGEST_TAG = "attestable:MeasurementsSHA384"
UKI_TAG = "attestable:UkiSHA256"

_MEASUREMENT_KEY = re.compile(r"^(HashAlgorithm|PCR([0-9]|1[0-9]|2[0-3]))$")
_HEX96 = re.compile(r"^[0-9a-f]{96}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")


class TagError(ValueError):
    """Tags that contradict a reference, or a reference given in the wrong form."""


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


def measurements_from_tags(tags):
    """HashAlgorithm and PCR<n> from a {key: value} tag dict; never the boot mode or anything else."""
    return dict((k[len(TAG_PREFIX):], v) for k, v in tags.items()
                if k.startswith(TAG_PREFIX) and _MEASUREMENT_KEY.match(k[len(TAG_PREFIX):]))


def _normalize_hex(value, pattern, what):
    text = str(value).strip().lower()
    if not pattern.match(text):
        raise TagError("%s must be %d hex characters, got %r" % (what, 96 if pattern is _HEX96 else 64, value))
    return text


def cross_check(ami_id, tags, expected_digest=None, expected_uki_sha256=None):
    """Check the measurements in an AMI's tags against the references given; returns (measurements, notes).

    Raises TagError when the tags contradict a reference or themselves (a digest tag that does not match the
    PCR tags). notes say what was and was not verified (the caller warns with them)."""
    measurements = measurements_from_tags(tags)
    notes = ["the measurements of %s come from its tags, which anyone with ec2:CreateTags on the AMI can rewrite"
             % ami_id]
    computed = measurements_digest(ami_id, measurements)
    tagged = tags.get(DIGEST_TAG)
    if tagged is not None and str(tagged).strip().lower() != computed:
        raise TagError("AMI %s: its %s tag (%s) does not match its measurement tags (they hash to %s): the tags were "
                       "edited after they were written; give the measurements from the manifest or pcr_compute"
                       % (ami_id, DIGEST_TAG, tagged, computed))
    if expected_digest:
        wanted = _normalize_hex(expected_digest, _HEX96, "expected_measurements_digest")
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

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_common/measurements: what a PCR key, a PCR value, the hash algorithm and the boot mode are, and the tags.
Every error names the input (``where``) and what was expected."""
import re

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._common import measurements as m

PCR = "ab" * 48
GOOD = {"HashAlgorithm": "SHA384", "PCR4": PCR, "PCR7": "cd" * 48, "PCR12": "0" * 96}


@pytest.mark.parametrize("key, index", [("PCR0", 0), ("PCR4", 4), ("PCR12", 12), ("PCR23", 23)])
def test_pcr_keys_are_pcr0_to_pcr23(key, index):
    assert m.is_pcr_key(key) and m.pcr_index(key) == index


@pytest.mark.parametrize("key", ["PCR24", "pcr4", "PCR", "4", "PCR04x", " PCR4", "HashAlgorithm", 4, None])
def test_other_keys_are_not_pcr_keys(key):
    assert not m.is_pcr_key(key) and m.pcr_index(key) is None


@pytest.mark.parametrize("name, key", [("PCR4", "PCR4"), ("pcr12", "PCR12"), ("7", "PCR7"), (23, "PCR23")])
def test_pcr_names_are_looser_than_keys(name, key):
    assert m.pcr_name(name) == key


@pytest.mark.parametrize("name", ["PCR24", "PCRx", "", "NitroTPMPCR4", -1])
def test_a_bad_pcr_name_is_named_with_what_was_expected(name):
    with pytest.raises(m.MeasurementError, match=r"^my_pcrs: %s is not a PCR name; expected PCR0 to PCR23"
                       % repr(name).replace("-", r"\-")):
        m.pcr_name(name, "my_pcrs")


def test_pcr_values_are_96_hex_lowercased_unless_only_lowercase_is_taken():
    assert m.pcr_value(PCR.upper(), "x.PCR4") == PCR
    assert m.pcr_value(PCR, "x.PCR4", any_case=False) == PCR
    with pytest.raises(m.MeasurementError, match=r"^x\.PCR4 must be 96 lowercase hex characters \(a SHA-384 digest\), "
                                                 r"got 'ABAB"):
        m.pcr_value(PCR.upper(), "x.PCR4", any_case=False)


@pytest.mark.parametrize("value", ["ab" * 47, "ab" * 49, "zz" * 48, " " + PCR, PCR + "\n", 12, None, b"ab" * 48])
def test_a_bad_pcr_value_is_named_with_what_was_expected(value):
    with pytest.raises(m.MeasurementError, match=r"^expected\.PCR7 must be 96 hexadecimal characters "
                                                 r"\(a SHA-384 digest\), got "):
        m.pcr_value(value, "expected.PCR7")


def test_hash_algorithm_is_sha384():
    assert m.is_hash_algorithm("SHA384") and not m.is_hash_algorithm("sha384")
    assert m.is_hash_algorithm("sha384", any_case=True)
    assert not m.is_hash_algorithm("SHA256", any_case=True) and not m.is_hash_algorithm(None)


def test_validate_takes_canonical_measurements_and_returns_them_unchanged():
    extra = dict(GOOD, engines=["python"], boot_mode="secure_boot")
    assert m.validate(extra) is extra


@pytest.mark.parametrize("bad, message", [
    (["PCR4"], r"^image\.measurements must be a dict like \{'HashAlgorithm': 'SHA384', 'PCR4': '<96 hex>'.*got list$"),
    (dict(GOOD, HashAlgorithm="SHA256"), r"^image\.measurements\.HashAlgorithm must be 'SHA384', got 'SHA256'$"),
    (dict(GOOD, HashAlgorithm="sha384"), r"HashAlgorithm must be 'SHA384', got 'sha384'"),
    ({"HashAlgorithm": "SHA384", "pcr4": PCR}, r"^image\.measurements holds no PCR values \(expected keys such as "
                                               r"PCR4, PCR7, PCR12\)$"),
    (dict(GOOD, PCR7=PCR.upper()), r"^image\.measurements\.PCR7 must be 96 lowercase hex characters"),
    (dict(GOOD, PCR12="0" * 95), r"^image\.measurements\.PCR12 must be 96 lowercase hex characters"),
    (dict(GOOD, boot_mode="secure"), r"^image\.measurements\.boot_mode must be one of standard, secure_boot \(as "
                                     r"pcr_compute returns it\), got 'secure'$"),
])
def test_validate_names_the_input_and_what_was_expected(bad, message):
    with pytest.raises(m.MeasurementError, match=message):
        m.validate(bad, "image.measurements")


def test_normalize_lowercases_a_copy_then_validates():
    given = dict(GOOD, PCR4=PCR.upper(), engines=["python"])
    result = m.normalize(given)
    assert result == dict(GOOD, engines=["python"]) and given["PCR4"] == PCR.upper()
    with pytest.raises(m.MeasurementError, match=r"^given\.PCR4 must be 96 lowercase hex characters"):
        m.normalize(dict(GOOD, PCR4="xy" * 48), "given")


def test_require_names_the_missing_pcrs():
    m.require(GOOD, m.REFERENCE_PCRS)
    with pytest.raises(m.MeasurementError, match=r"^tool output hold no value for PCR7, PCR12 \(they have PCR4\)$"):
        m.require({"PCR4": PCR}, m.REFERENCE_PCRS, "tool output")


@pytest.mark.parametrize("given, mode", [("standard", "standard"), ("secure_boot", "secure_boot"),
                                         ("Secure Boot", "secure_boot"), ("secure-boot", "secure_boot"),
                                         ("SecureBoot", "secure_boot"), (" Standard ", "standard")])
def test_boot_mode_spellings(given, mode):
    assert m.boot_mode(given) == mode


def test_a_bad_boot_mode_is_named_with_what_was_expected():
    with pytest.raises(m.MeasurementError, match=r"^kms_authorize_boot_mode must be one of standard, secure_boot, "
                                                 r"got 'uefi'$"):
        m.boot_mode("uefi", "kms_authorize_boot_mode")
    assert m.boot_mode_for("pk.esl") == m.SECURE_BOOT and m.boot_mode_for(None) == m.STANDARD


def test_tags_round_trip_without_the_boot_mode_or_other_keys():
    given = dict(GOOD, boot_mode="standard", engines=["python"])
    tags = m.to_tags(given)
    assert tags == {"attestable:HashAlgorithm": "SHA384", "attestable:PCR4": PCR, "attestable:PCR7": "cd" * 48,
                    "attestable:PCR12": "0" * 96}
    assert all(m.is_measurement_tag(k) for k in tags)
    assert m.from_tags(dict(tags, Name="x", **{"attestable:SnapshotId": "snap-1"})) == GOOD
    assert m.from_tags(None) == {}
    with pytest.raises(m.MeasurementError, match=r"^measurements\.PCR4 must be 96 lowercase hex"):
        m.to_tags(dict(GOOD, PCR4=PCR.upper()))


def test_every_tag_key_is_listed_under_the_one_prefix():
    assert all(key.startswith(m.TAG_PREFIX) for key in m.TAG_KEYS)
    assert m.HASH_ALGORITHM_TAG in m.TAG_KEYS and m.DIGEST_TAG in m.TAG_KEYS and m.SNAPSHOT_TAG in m.TAG_KEYS


def test_a_trailing_newline_is_no_part_of_a_key_or_value():
    # "$" in a Python regex also matches before a final newline; the old per-file patterns let these through.
    assert not m.is_pcr_key("PCR4\n") and not m.is_pcr_value(PCR + "\n") and not m.is_measurement_tag("attestable:PCR4\n")
    with pytest.raises(m.MeasurementError, match=r"^measurements\.PCR4 must be 96 lowercase hex"):
        m.validate(dict(GOOD, PCR4=PCR + "\n"))


def test_tag_value_reads_the_current_key_first_then_the_legacy_spelling():
    assert m.tag_value({"attestable:ImageSHA256": "new", "attestable:image-sha256": "old"}, m.IMAGE_SHA256_TAG) == "new"
    assert m.tag_value({"attestable:image-sha256": "old"}, m.IMAGE_SHA256_TAG) == "old"
    assert m.tag_value({"attestable:run-id": "r1"}, m.BUILDER_RUN_ID_TAG) == "r1"
    assert m.tag_value({"Name": "x"}, m.IMAGE_SIZE_TAG) is None
    # Every key is written in one style: attestable: + CamelCase (the legacy spellings are only read).
    for key in m.TAG_KEYS:
        assert re.match(r"^attestable:[A-Z][A-Za-z0-9<>]*$", key), key
    assert not set(m.LEGACY_TAG_KEYS.values()) & set(m.TAG_KEYS)


def test_no_trailing_newline_reaches_a_comparison():
    # The cross-check inputs are stripped before they are matched and compared; AMI ids are matched whole.
    assert m._normalize_hex("AB" * 32 + "\n", m._HEX64, "expected_uki_sha256") == "ab" * 32
    assert m._AMI_ID.match("ami-0123456789abcdef0\n") is None
    assert m._HEX64.match("ab" * 32 + "\n") is None

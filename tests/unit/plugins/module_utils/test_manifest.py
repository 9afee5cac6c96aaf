# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
import json

import pytest

from ansible_collections.attestable.ami.plugins.module_utils import manifest

PCR = "ab" * 48
MEASUREMENTS = {"HashAlgorithm": "SHA384", "PCR4": PCR, "PCR7": "00" * 48, "PCR12": "00" * 48}


def test_missing_file_reads_as_empty_manifest(tmp_path):
    assert manifest.load(str(tmp_path / "none.json")) == {"schema_version": 1}


def test_update_replaces_only_named_sections():
    before = {"schema_version": 1, "amis": {"us-east-1": "ami-0123456789abcdef0"}, "image": {"name": "x"}}
    after = manifest.update(before, {"measurements": MEASUREMENTS})
    assert after["amis"] == before["amis"] and after["image"] == {"name": "x"}
    assert after["measurements"] == MEASUREMENTS
    assert "measurements" not in before, "update must not modify its input"


def test_none_removes_a_section():
    before = {"schema_version": 1, "kms": [{"key_id": "k", "statement_id": "s"}]}
    assert manifest.update(before, {"kms": None}) == {"schema_version": 1}


def test_write_is_atomic_and_reports_change(tmp_path):
    path = str(tmp_path / "m.json")
    data = manifest.update(manifest.new(), {"measurements": MEASUREMENTS})
    assert manifest.write(path, data) is True
    assert manifest.write(path, data) is False
    assert json.loads(open(path).read()) == data
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.parametrize("bad, needle", [
    ({"HashAlgorithm": "SHA256", "PCR4": PCR}, "HashAlgorithm"),
    ({"HashAlgorithm": "SHA384"}, "no PCR values"),
    ({"HashAlgorithm": "SHA384", "PCR4": PCR.upper()}, "PCR4"),
    ({"HashAlgorithm": "SHA384", "PCR4": PCR[:-2]}, "96 lowercase hex"),
    ({"HashAlgorithm": "SHA384", "PCR12": 5}, "PCR12"),
    ("SHA384", "must be a dict"),
])
def test_bad_measurements_are_named(bad, needle):
    with pytest.raises(manifest.ManifestError, match=needle):
        manifest.validate_measurements(bad)


@pytest.mark.parametrize("sections, needle", [
    ({"amis": {"us-east-1": "i-123"}}, "amis.us-east-1"),
    ({"kms": [{"key_id": "k"}]}, r"kms\[0\]"),
    ({"bogus": {}}, "unknown section"),
    ({"image": []}, "image must be a dict"),
])
def test_bad_sections_are_refused(sections, needle):
    with pytest.raises(manifest.ManifestError, match=needle):
        manifest.update(manifest.new(), sections)


def test_wrong_schema_version_and_bad_json(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"schema_version": 2}')
    with pytest.raises(manifest.ManifestError, match="schema_version is 2"):
        manifest.load(str(path))
    path.write_text("{not json")
    with pytest.raises(manifest.ManifestError, match="not valid JSON"):
        manifest.load(str(path))


GOOD_KMS = {"key_id": "1234abcd-12ab-34cd-56ef-1234567890ab", "statement_id": "AttestableAMI-ami-0123456789abcdef0",
            "key_arn": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "region": "eu-west-1", "image": "ami-0123456789abcdef0"}


@pytest.mark.parametrize("bad, needle", [
    ({"boot_mode": "secure"}, r"measurements.boot_mode must be one of standard, secure_boot"),
    ({"boot_mode": None}, "boot_mode"),
    ({"boot_mode": True}, "boot_mode"),
])
def test_measurements_boot_mode_is_validated(bad, needle):
    measurements = dict({"HashAlgorithm": "SHA384", "PCR4": PCR}, **bad)
    with pytest.raises(manifest.ManifestError, match=needle):
        manifest.update(manifest.new(), {"measurements": measurements})
    for mode in ("standard", "secure_boot"):
        manifest.validate_measurements(dict(measurements, boot_mode=mode))


@pytest.mark.parametrize("override, needle", [
    ({"key_id": 5}, r"kms\[0\].key_id must be a non-empty string"),
    ({"statement_id": "Allow administration"}, r"kms\[0\].statement_id must be a Sid this collection owns"),
    ({"key_arn": "arn:aws:s3:::bucket"}, r"kms\[0\].key_arn must be a KMS key ARN"),
    ({"region": "Europe"}, r"kms\[0\].region must be an AWS region"),
    ({"region": "us-east-1"}, "differs from the region of key_arn"),
    ({"image": ""}, r"kms\[0\].image must be a non-empty string"),
])
def test_kms_entries_are_validated(override, needle):
    manifest.update(manifest.new(), {"kms": [GOOD_KMS]})
    with pytest.raises(manifest.ManifestError, match=needle):
        manifest.update(manifest.new(), {"kms": [dict(GOOD_KMS, **override)]})
    with pytest.raises(manifest.ManifestError, match=r"kms\[1\] must be a dict"):
        manifest.update(manifest.new(), {"kms": [GOOD_KMS, "key"]})

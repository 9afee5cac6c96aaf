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

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""attestable.ami.attestation_manifest through a real ansible-playbook run."""
import json

PCR = "cd" * 48

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: update
      attestable.ami.attestation_manifest:
        path: "{{ path }}"
        sections: "{{ sections }}"
"""


def test_update_check_diff_and_idempotence(run_playbook, tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema_version": 1, "amis": {"eu-west-1": "ami-0123456789abcdef0"}}))
    sections = {"measurements": {"HashAlgorithm": "SHA384", "PCR4": PCR, "PCR12": "00" * 48}}
    original = path.read_text()

    check = run_playbook(PLAYBOOK, {"path": str(path), "sections": sections}, check=True, diff=True)
    assert check.rc == 0, check.stdout
    assert check.task("update")["changed"] is True
    assert PCR in check.task("update")["diff"]["after"]
    assert path.read_text() == original, "check mode must not write"

    first = run_playbook(PLAYBOOK, {"path": str(path), "sections": sections})
    assert first.task("update")["changed"] is True
    written = json.loads(path.read_text())
    assert written["amis"] == {"eu-west-1": "ami-0123456789abcdef0"}
    assert written["measurements"]["PCR4"] == PCR

    second = run_playbook(PLAYBOOK, {"path": str(path), "sections": sections})
    assert second.task("update")["changed"] is False


def test_bad_section_fails_and_leaves_file(run_playbook, tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema_version": 1}))
    result = run_playbook(PLAYBOOK, {"path": str(path),
                                     "sections": {"measurements": {"HashAlgorithm": "SHA384", "PCR4": "xyz"}}})
    assert result.rc != 0
    assert "measurements.PCR4 must be 96 lowercase hex" in result.task("update")["msg"]
    assert json.loads(path.read_text()) == {"schema_version": 1}

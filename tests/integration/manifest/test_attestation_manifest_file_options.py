# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""attestation_manifest honours the file options (mode, owner, group) on the file it writes; check mode writes
nothing; a read-only call does not touch the file."""
import grp
import json
import os
import pwd
import stat

PCR = "ab" * 48

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: update
      attestable.ami.attestation_manifest: "{{ args }}"
"""


def test_mode_owner_and_group_take_effect_and_check_mode_writes_nothing(run_playbook, tmp_path):
    path = tmp_path / "manifest.json"
    args = {"path": str(path), "mode": "0600",
            "sections": {"measurements": {"HashAlgorithm": "SHA384", "PCR4": PCR, "PCR12": "00" * 48}}}
    expected = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        args.update(owner="nobody", group=grp.getgrgid(nobody.pw_gid).gr_name)
        expected = {"st_uid": nobody.pw_uid, "st_gid": nobody.pw_gid}

    check = run_playbook(PLAYBOOK, {"args": args}, check=True)
    assert check.rc == 0, check.stdout[-3000:]
    assert check.task("update")["changed"] is True
    assert not path.exists(), "check mode must not write"

    first = run_playbook(PLAYBOOK, {"args": args})
    assert first.task("update")["changed"] is True
    info = os.stat(str(path))
    assert stat.S_IMODE(info.st_mode) == 0o600
    for field, value in expected.items():
        assert getattr(info, field) == value, field
    assert json.loads(path.read_text())["measurements"]["PCR4"] == PCR
    assert run_playbook(PLAYBOOK, {"args": args}).task("update")["changed"] is False

    looser = dict(args, mode="0644")
    check = run_playbook(PLAYBOOK, {"args": looser}, check=True)
    assert check.task("update")["changed"] is True
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600, "check mode changes no mode"
    assert run_playbook(PLAYBOOK, {"args": looser}).task("update")["changed"] is True
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o644

    read_only = run_playbook(PLAYBOOK, {"args": {"path": str(path), "mode": "0600"}})
    assert read_only.task("update")["changed"] is False
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o644, "a call that only reads leaves the file alone"

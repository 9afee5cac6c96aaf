# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pcr_compute's dest honours the file options (mode, owner, group: add_file_common_args); check mode writes nothing."""
import grp
import json
import os
import pwd
import stat


def file_options():
    """mode, plus owner and group when this runs as root (nobody and nobody's group), and how to check them."""
    if os.geteuid() != 0:
        return {}, {}
    nobody = pwd.getpwnam("nobody")
    return ({"owner": "nobody", "group": grp.getgrgid(nobody.pw_gid).gr_name},
            {"st_uid": nobody.pw_uid, "st_gid": nobody.pw_gid})


def test_mode_owner_and_group_take_effect_and_check_mode_writes_nothing(run_playbook, inputs, tmp_path):
    dest = tmp_path / "measurements.json"
    ownership, expected_ids = file_options()
    args = dict({"images": [inputs["uki"]], "dest": str(dest), "mode": "0600"}, **ownership)
    book = """
- hosts: localhost
  gather_facts: false
  vars:
    args: {args}
  tasks:
    - name: Check mode
      attestable.ami.pcr_compute: "{{{{ args }}}}"
      check_mode: true
    - name: Write
      attestable.ami.pcr_compute: "{{{{ args }}}}"
    - name: Again
      attestable.ami.pcr_compute: "{{{{ args }}}}"
""".format(args=json.dumps(args))
    result = run_playbook(book)
    assert result.rc == 0, result.stdout[-3000:]
    assert result.task("Check mode")["changed"] is True
    assert result.task("Write")["changed"] is True and result.task("Again")["changed"] is False
    info = os.stat(str(dest))
    assert stat.S_IMODE(info.st_mode) == 0o600
    for field, value in expected_ids.items():
        assert getattr(info, field) == value, field
    assert json.loads(dest.read_text())["Measurements"] == result.task("Write")["measurements"]


def test_a_mode_that_differs_alone_is_a_change_and_check_mode_leaves_it(run_playbook, inputs, tmp_path):
    dest = tmp_path / "measurements.json"
    book = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Write
      attestable.ami.pcr_compute: {{images: {images}, dest: "{dest}"}}
    - name: Mode in check mode
      attestable.ami.pcr_compute: {{images: {images}, dest: "{dest}", mode: "0640"}}
      check_mode: true
    - name: Stat after check mode
      ansible.builtin.stat:
        path: "{dest}"
    - name: Mode
      attestable.ami.pcr_compute: {{images: {images}, dest: "{dest}", mode: "0640"}}
    - name: Mode again
      attestable.ami.pcr_compute: {{images: {images}, dest: "{dest}", mode: "u=rw,g=r"}}
""".format(images=json.dumps([inputs["uki"]]), dest=dest)
    result = run_playbook(book)
    assert result.rc == 0, result.stdout[-3000:]
    assert result.task("Write")["changed"] is True
    assert result.task("Mode in check mode")["changed"] is True
    assert result.task("Stat after check mode")["stat"]["mode"] == "0644", "check mode changes no mode"
    assert result.task("Mode")["changed"] is True
    assert result.task("Mode again")["changed"] is False
    assert stat.S_IMODE(os.stat(str(dest)).st_mode) == 0o640

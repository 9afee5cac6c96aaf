# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiwi_build applies the file options (mode, owner, group) to the files the build produced, also to a reused
build; check mode changes none. kiwi-ng is the stand-in of test_kiwi_build_module.py (see there)."""
import grp
import os
import pwd
import stat

import test_kiwi_build_module

pytestmark = test_kiwi_build_module.pytestmark  # its skips (no mtools, not root)
setup = test_kiwi_build_module.setup  # the fixture with the stand-in kiwi-ng

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: build
      attestable.ami.kiwi_build:
        description: "{{ description }}"
        target_dir: "{{ target }}"
        kiwi_ng: "{{ kiwi_ng }}"
        mode: "{{ mode }}"
        owner: "{{ owner | default(omit) }}"
        group: "{{ group | default(omit) }}"
      timeout: 300
"""


def modes(paths):
    return dict((path, stat.S_IMODE(os.stat(path).st_mode)) for path in paths)


def test_outputs_get_the_file_options_and_a_reused_build_too(run_playbook, setup):
    extra = {"description": setup["description"], "target": setup["target"], "kiwi_ng": setup["kiwi_ng"],
             "mode": "0640"}
    nobody = pwd.getpwnam("nobody")
    extra.update(owner="nobody", group=grp.getgrgid(nobody.pw_gid).gr_name)
    first = run_playbook(PLAYBOOK, extra)
    assert first.rc == 0, first.stdout[-3000:]
    build = first.task("build")
    assert build["changed"] is True
    outputs = [build["disk"], build["uki"], build["log_file"]]
    assert build["uki_source"] == "esp"
    for path in outputs:
        info = os.stat(path)
        assert stat.S_IMODE(info.st_mode) == 0o640, path
        assert (info.st_uid, info.st_gid) == (nobody.pw_uid, nobody.pw_gid), path

    assert run_playbook(PLAYBOOK, extra).task("build")["changed"] is False
    looser = dict(extra, mode="0644")
    check = run_playbook(PLAYBOOK, looser, check=True)
    assert check.task("build")["changed"] is True
    assert set(modes(outputs).values()) == {0o640}, "check mode changes no mode"
    reused = run_playbook(PLAYBOOK, looser).task("build")
    assert reused["changed"] is True and "already holds a successful build" in reused["reason"]
    assert set(modes(outputs).values()) == {0o644}

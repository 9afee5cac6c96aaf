# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The manifest and pcr_compute's dest through real ansible-playbook runs: a FIFO, a directory or a symbolic link
is refused at once with a message naming the path (a FIFO used to hang the module), and an existing file keeps
its mode. Each task carries a timeout so that a module that blocks fails the test instead of hanging it."""
import json
import os
import stat
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "unit", "plugins", "module_utils", "_pcr"))

import pcr_test_images  # noqa: E402  (real UKIs from the shared test vector)

MANIFEST_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: update
      attestable.ami.attestation_manifest:
        path: "{{ path }}"
        sections: "{{ sections }}"
      timeout: 60
"""

DEST_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: compute
      attestable.ami.pcr_compute:
        images: ["{{ uki }}"]
        engine: python
        dest: "{{ dest }}"
      timeout: 60
"""

SECTIONS = {"amis": {"eu-west-1": "ami-0123456789abcdef0"}}


def special(tmp_path, kind):
    path = tmp_path / "target.json"
    if kind == "fifo":
        os.mkfifo(str(path))
    elif kind == "directory":
        path.mkdir()
    else:
        real = tmp_path / "real.json"
        real.write_text(json.dumps({"schema_version": 1}))
        path.symlink_to(real)
    return path


def still_the_same(path, kind):
    mode = os.lstat(str(path)).st_mode
    return {"fifo": stat.S_ISFIFO, "directory": stat.S_ISDIR, "symlink": stat.S_ISLNK}[kind](mode)


WORDS = {"fifo": "is a FIFO", "directory": "is a directory", "symlink": "is a symbolic link"}


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink"])
def test_manifest_path_that_is_not_a_regular_file_is_refused(run_playbook, tmp_path, kind):
    path = special(tmp_path, kind)
    result = run_playbook(MANIFEST_PLAYBOOK, {"path": str(path), "sections": SECTIONS})
    task = result.task("update")
    assert result.rc != 0 and task.get("failed") is True, result.stdout
    assert str(path) in task["msg"] and WORDS[kind] in task["msg"], task["msg"]
    assert still_the_same(path, kind)
    if kind == "symlink":
        assert json.loads((tmp_path / "real.json").read_text()) == {"schema_version": 1}


def test_manifest_keeps_its_mode(run_playbook, tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema_version": 1}))
    os.chmod(str(path), 0o600)
    result = run_playbook(MANIFEST_PLAYBOOK, {"path": str(path), "sections": SECTIONS})
    assert result.rc == 0 and result.task("update")["changed"] is True, result.stdout
    assert json.loads(path.read_text())["amis"] == SECTIONS["amis"]
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600


@pytest.fixture(scope="module")
def uki():
    return os.path.join(pcr_test_images.vector(), "uki.efi")


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink"])
def test_pcr_compute_dest_that_is_not_a_regular_file_is_refused(run_playbook, tmp_path, uki, kind):
    dest = special(tmp_path, kind)
    result = run_playbook(DEST_PLAYBOOK, {"uki": uki, "dest": str(dest)})
    task = result.task("compute")
    assert result.rc != 0 and task.get("failed") is True, result.stdout
    assert str(dest) in task["msg"] and WORDS[kind] in task["msg"], task["msg"]
    assert still_the_same(dest, kind)
    if kind == "symlink":
        assert json.loads((tmp_path / "real.json").read_text()) == {"schema_version": 1}


def test_pcr_compute_dest_keeps_its_mode(run_playbook, tmp_path, uki):
    dest = tmp_path / "measurements.json"
    dest.write_text("{}\n")
    os.chmod(str(dest), 0o640)
    result = run_playbook(DEST_PLAYBOOK, {"uki": uki, "dest": str(dest)})
    assert result.rc == 0 and result.task("compute")["changed"] is True, result.stdout
    assert json.loads(dest.read_text())["Measurements"]["HashAlgorithm"] == "SHA384"
    assert stat.S_IMODE(os.stat(str(dest)).st_mode) == 0o640

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""attestable.ami.kiwi_validate through real ansible-playbook runs with the real KIWI: on its own (without the
image_description role) it flags shells, weakened dm-verity, unverified repositories and operator access; it
names missing referenced files; it refuses a description written for a newer KIWI schema, naming both versions;
its digest skips a FIFO instead of hanging. Descriptions: descriptions/uefi-attestable (validated, not built)."""
import os
import shutil

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
UEFI = os.path.join(HERE, "descriptions", "uefi-attestable")

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: validate
      attestable.ami.kiwi_validate:
        description: "{{ description }}"
        require_attestable: "{{ require | default(false) }}"
      timeout: 300
"""

pytest.importorskip("kiwi", reason="kiwi_validate needs the KIWI NG Python package")


@pytest.fixture
def description(tmp_path):
    dest = tmp_path / "description"
    shutil.copytree(UEFI, str(dest))
    return dest


def edit(description, old, new):
    path = description / "appliance.kiwi"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_attestable_description(run_playbook, description):
    result = run_playbook(PLAYBOOK, {"description": str(description)})
    task = result.task("validate")
    assert result.rc == 0, result.stdout
    assert task["attestable"] is True and task["findings"] == [] and task["unattestable"] == []
    assert task["schema_version"] == "8.3" and task["kiwi_schema_version"] and task["kiwi_version"]
    assert {r["path"] for r in task["references"]} == {
        "edit_boot_install.sh", "customize-repo.sh", "this://keys/debian-archive.gpg", "extra-tree.tar.gz"}
    assert task["description_digest"].startswith("sha256:")


def test_what_the_role_refuses_is_flagged_by_the_module_alone(run_playbook, description):
    edit(description, "rd.kiwi.verity_options=panic-on-corruption",
         "rd.kiwi.verity_options=ignore-corruption rd.break systemd.debug_shell init=/bin/sh rd.shell=1")
    edit(description, '<source path="https://deb.debian.org/debian">', '<source path="http://deb.debian.org/debian">')
    edit(description, 'architectures="amd64"', 'architectures="amd64" repository_gpgcheck="false"')
    edit(description, '<package name="binutils"/>', '<package name="binutils"/><package name="openssh-server"/>')
    result = run_playbook(PLAYBOOK, {"description": str(description)})
    task = result.task("validate")
    assert result.rc == 0, result.stdout
    assert task["attestable"] is False
    flagged = {(f["setting"], f["value"]) for f in task["findings"] if f["severity"] == "unattestable"}
    cmdline = [f["value"] for f in task["findings"] if f["setting"] == "kernelcmdline" and f["severity"] == "unattestable"]
    for arg in ("rd.break", "systemd.debug_shell", "init=/bin/sh", "rd.kiwi.verity_options=ignore-corruption"):
        assert arg in cmdline, (arg, task["findings"])
    assert ("packages", "openssh-server") in flagged
    assert ("repository[debian]@repository_gpgcheck", "false") in flagged
    assert ("repository[debian] source", "http://deb.debian.org/debian") in flagged
    assert any("panic on verity corruption" in line for line in task["unattestable"])
    assert any("no shell in the initrd" in line for line in task["unattestable"])
    assert all(set(f) == {"setting", "value", "reason", "severity"} for f in task["findings"])

    refused = run_playbook(PLAYBOOK, {"description": str(description), "require": True})
    failed = refused.task("validate")
    assert refused.rc != 0 and failed["failed"] is True
    assert "is not attestable" in failed["msg"] and "rd.break" in failed["msg"] and "openssh-server" in failed["msg"]


def test_missing_referenced_files_are_named(run_playbook, description):
    os.remove(str(description / "edit_boot_install.sh"))
    os.remove(str(description / "customize-repo.sh"))
    result = run_playbook(PLAYBOOK, {"description": str(description)})
    task = result.task("validate")
    assert result.rc != 0 and task["failed"] is True
    assert "references files that do not exist" in task["msg"]
    assert len(task["errors"]) == 2
    assert any("edit_boot_install.sh" in e for e in task["errors"]) and any("customize-repo.sh" in e for e in task["errors"])


def test_newer_schema_than_the_installed_kiwi(run_playbook, description):
    edit(description, 'schemaversion="8.3"', 'schemaversion="9.9"')
    result = run_playbook(PLAYBOOK, {"description": str(description)})
    task = result.task("validate")
    assert result.rc != 0 and task["failed"] is True
    assert task["schema_version"] == "9.9" and task["kiwi_schema_version"] and task["kiwi_version"]
    assert 'schemaversion="9.9"' in task["msg"] and "up to %s" % task["kiwi_schema_version"] in task["msg"]
    assert task["kiwi_version"] in task["msg"]


def test_fifo_in_the_description_does_not_hang_the_digest(run_playbook, description):
    os.mkfifo(str(description / "root" / "etc" / "initctl"))
    result = run_playbook(PLAYBOOK, {"description": str(description)})
    task = result.task("validate")
    assert result.rc == 0 and task.get("failed") is not True, task.get("msg")
    assert any("root/etc/initctl" in w and "FIFO" in w for w in task.get("warnings", [])), task.get("warnings")
    os.remove(str(description / "root" / "etc" / "initctl"))
    without = run_playbook(PLAYBOOK, {"description": str(description)}).task("validate")
    assert without["description_digest"] != task["description_digest"]


OLD_KIWI_PYTHON = os.environ.get("ATTESTABLE_OLD_KIWI_PYTHON")


@pytest.mark.skipif(not OLD_KIWI_PYTHON, reason="set ATTESTABLE_OLD_KIWI_PYTHON to a Python (e.g. 3.9) whose KIWI "
                    "is older than 10.3.5, as on an AL2023 builder")
def test_builder_python_with_an_older_kiwi(run_playbook, description):
    """The module run by another interpreter with its own, older KIWI (as on the builder): a description it
    can read validates; one written for schema 8.5 fails naming 8.5, its schema and KIWI 10.3.5."""
    book = PLAYBOOK.replace("gather_facts: false", "gather_facts: false\n  vars:\n"
                            "    ansible_python_interpreter: %s" % OLD_KIWI_PYTHON)
    edit(description, '<signing key="this://keys/debian-archive.gpg"/>', "")  # this:// keys: schema 8.5 only
    result = run_playbook(book, {"description": str(description)})
    task = result.task("validate")
    assert result.rc == 0, task.get("msg")
    assert task["attestable"] is True and task["kiwi_schema_version"] in ("8.3", "8.4")
    edit(description, 'schemaversion="8.3"', 'schemaversion="8.5"')
    result = run_playbook(book, {"description": str(description)})
    task = result.task("validate")
    assert result.rc != 0
    assert 'schemaversion="8.5"' in task["msg"] and "KIWI 10.3.5 or newer" in task["msg"]
    assert task["kiwi_version"] in task["msg"]

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""verity_verify on a KIWI-like disk (real mkfs.erofs, veritysetup, sgdisk, loop devices): pass and tamper proofs."""
import hashlib
import os
import subprocess

import verity_disk
from ansible_collections.attestable.ami.plugins.module_utils._boot import verity

VERIFY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Verify
      attestable.ami.verity_verify: "{{ verify_args }}"
      ignore_errors: true
"""


def _verify(run_playbook, check=False, **args):
    run = run_playbook(VERIFY, extra_vars={"verify_args": args}, check=check)
    assert run.rc == 0, run.stdout[-3000:]
    return run.task("Verify")


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _loops_on(path):
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if os.path.realpath(path) in line]


def test_the_root_partition_verifies_against_the_veritytab_in_the_uki_initrd(run_playbook, verity_image):
    before = _sha256(verity_image["disk"])
    result = _verify(run_playbook, disk=verity_image["disk"], uki=verity_image["uki"])
    assert not result.get("failed"), result.get("msg")
    assert result["verified"] is True and result["changed"] is False
    expected = verity_image["verity"]
    assert result["root_hash"] == expected["root_hash"]
    assert result["root_hash_source"] == "uki"
    assert result["hash_offset"] == expected["hash_offset"]
    assert result["data_size"] == expected["hash_offset"]  # KIWI: every block of the filesystem is protected
    assert result["hash_size"] > 0 and result["hash_block_size"] == 4096
    assert result["veritytab"]["line"] == verity_disk.veritytab_line(expected).strip()
    # found by the veritytab's UUID=... (the erofs UUID), as the initrd finds it
    assert result["partition"]["number"] == 2 and result["partition"]["label"] == verity_disk.ROOT_LABEL
    assert result["accessed_via"] == "loop"
    assert _loops_on(verity_image["disk"]) == []
    assert _sha256(verity_image["disk"]) == before


def test_root_hash_and_hash_offset_with_a_partition_label_and_in_check_mode(run_playbook, verity_image):
    expected = verity_image["verity"]
    result = _verify(run_playbook, check=True, disk=verity_image["disk"], partition_label=verity_disk.ROOT_LABEL,
                     root_hash=expected["root_hash"].upper(), hash_offset=expected["hash_offset"])
    assert not result.get("failed"), result.get("msg")
    assert result["verified"] is True
    assert result["root_hash"] == expected["root_hash"]


def test_a_wrong_root_hash_fails_naming_both_hashes(run_playbook, verity_image):
    expected = verity_image["verity"]["root_hash"]
    wrong = hashlib.sha256(b"another build").hexdigest()
    result = _verify(run_playbook, disk=verity_image["disk"], partition=2, root_hash=wrong,
                     hash_offset=verity_image["verity"]["hash_offset"])
    assert result["failed"] and result["verified"] is False
    assert "expected root hash %s (from root_hash)" % wrong in result["msg"]
    assert "the data's root hash is %s" % expected in result["msg"]
    assert result["actual_root_hash"] == expected
    assert _loops_on(verity_image["disk"]) == []


def test_a_flipped_byte_in_the_filesystem_fails_and_can_be_reported_without_failing(run_playbook, verity_image,
                                                                                    tampered_disk):
    expected = verity_image["verity"]["root_hash"]
    result = _verify(run_playbook, disk=tampered_disk, uki=verity_image["uki"])
    assert result["failed"] and result["verified"] is False
    assert "dm-verity verification of partition 2 of %s failed: expected root hash %s (from uki)" % (
        tampered_disk, expected) in result["msg"]
    assert result["actual_root_hash"] not in (None, expected)
    assert "the data's root hash is %s" % result["actual_root_hash"] in result["msg"]
    assert "Verification" in result["message"]  # veritysetup's own words
    reported = _verify(run_playbook, disk=tampered_disk, uki=verity_image["uki"], fail_on_mismatch=False)
    assert not reported.get("failed") and reported["verified"] is False
    assert _loops_on(tampered_disk) == []


def test_a_data_file_with_a_veritytab_file_or_text(run_playbook, verity_image):
    for tab in (verity_image["veritytab"], verity_disk.veritytab_line(verity_image["verity"])):
        result = _verify(run_playbook, data=verity_image["filesystem"], veritytab=tab)
        assert not result.get("failed"), result.get("msg")
        assert result["verified"] is True and result["accessed_via"] == "file"
        assert result["root_hash_source"] == "veritytab"


def test_a_wrong_hash_offset_is_an_input_error_not_a_mismatch(run_playbook, verity_image):
    result = _verify(run_playbook, data=verity_image["filesystem"], root_hash=verity_image["verity"]["root_hash"],
                     hash_offset=4096, fail_on_mismatch=False)
    assert result["failed"]
    assert "hash_offset: no dm-verity superblock at byte 4096" in result["msg"]


def test_without_root_a_temporary_copy_of_the_partition_is_verified_and_removed(verity_image, tmp_path,
                                                                                monkeypatch):
    # stands for an unprivileged user: no loop devices, so the partition is copied out
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = verity.check({"disk": verity_image["disk"], "uki": verity_image["uki"]}, tmpdir=str(scratch))
    assert result["verified"] is True and result["accessed_via"] == "copy"
    assert os.listdir(str(scratch)) == []

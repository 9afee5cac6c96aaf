# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The real thing: KIWI 11 builds the role's Debian flavour (UEFI oem disk, erofs root under dm-verity, dracut UKI);
pcr_compute predicts its UKI, verity_verify checks the root partition against the UKI's /etc/veritytab,
measured_boot boots the disk to userspace with expected = the prediction, and the same disk with one byte of
block 0 of the erofs partition flipped (a byte erofs itself never reads: only dm-verity can notice) must stop
with boot_failed: verity. One build (minutes) shared with tests/integration/kiwi (the debian_uefi_build fixture), two boots of ~1-3 min under TCG.
"""
import os
import shutil
import sys

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._boot import verity

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "kiwi"))
sys.path.insert(0, os.path.join(HERE, os.pardir, "measured_boot"))
from measured_boot_helpers import processes_mentioning  # noqa: E402

pytestmark = pytest.mark.slow


PROVE = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Predict
      attestable.ami.pcr_compute:
        images: ["{{ uki }}"]
      register: prediction

    - name: Verify the root partition against the UKI's veritytab
      attestable.ami.verity_verify:
        disk: "{{ disk }}"
        uki: "{{ uki }}"
        fail_on_mismatch: false

    - name: Boot to userspace
      attestable.ami.measured_boot:
        disk: "{{ disk }}"
        until: userspace
        expect_boot_failure: "{{ expect_boot_failure | default(omit) }}"
        expected: "{{ prediction.measurements }}"
      ignore_errors: true
"""


@pytest.fixture(scope="module")
def kiwi_debian(debian_uefi_build, tmp_path_factory):
    """The session's one build of the role's Debian flavour, and a copy of its disk with one erofs byte flipped."""
    build = debian_uefi_build["build"]
    work = tmp_path_factory.mktemp("kiwi-verity")
    tampered = str(work / "tampered.raw")
    shutil.copyfile(build["disk"], tampered)
    entry = verity.select_entry(verity.parse_veritytab(verity.veritytab_from_uki(build["uki"])))
    partition = verity.select_partition(tampered, device=entry["data_device"])
    with open(tampered, "r+b") as handle:
        handle.seek(partition["offset"] + 600)
        byte = handle.read(1)
        handle.seek(partition["offset"] + 600)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return {"build": build, "tampered": tampered, "work": work}


def _prove(run_playbook, kiwi_debian, disk, tmpdir, **extra):
    run = run_playbook(PROVE, extra_vars=dict(uki=kiwi_debian["build"]["uki"], disk=disk, **extra),
                       env={"TMPDIR": tmpdir})
    assert run.rc == 0, run.stdout[-3000:]
    return run


def test_the_kiwi_disk_verifies_and_boots_to_userspace_with_the_predicted_pcrs(
        run_playbook, kiwi_debian, tmp_path_factory):
    tmpdir = str(tmp_path_factory.mktemp("kb"))
    run = _prove(run_playbook, kiwi_debian, kiwi_debian["build"]["disk"], tmpdir)
    checked = run.task("Verify the root partition against the UKI's veritytab")
    assert checked["verified"] is True
    assert checked["root_hash"] == kiwi_debian["build"]["root_hash"]
    boot = run.task("Boot to userspace")
    print("KIWI Debian disk to userspace: %s s" % boot.get("boot_seconds"))
    assert not boot.get("failed"), (boot.get("msg"), boot.get("console_tail"))
    assert boot["reached_userspace"] is True and boot["boot_failed"] is None
    assert boot["measured"] == run.task("Predict")["measurements"]
    assert "ATTESTABLE-USERSPACE-REACHED" in "\n".join(boot["console_tail"])
    assert os.listdir(tmpdir) == [] and processes_mentioning(tmpdir) == []


def test_a_flipped_byte_of_the_kiwi_erofs_partition_stops_the_boot_with_dm_verity(
        run_playbook, kiwi_debian, tmp_path_factory):
    tmpdir = str(tmp_path_factory.mktemp("kt"))
    run = _prove(run_playbook, kiwi_debian, kiwi_debian["tampered"], tmpdir, expect_boot_failure="verity")
    checked = run.task("Verify the root partition against the UKI's veritytab")
    assert checked["verified"] is False and checked["actual_root_hash"] != checked["root_hash"]
    boot = run.task("Boot to userspace")
    print("KIWI Debian tampered disk fails after: %s s" % boot.get("boot_seconds"))
    assert not boot.get("failed"), (boot.get("msg"), boot.get("console_tail"))
    assert boot["boot_failed"] == "verity" and boot["reached_userspace"] is False
    assert boot["differing"] == []  # same UKI: the firmware's measurements still match the prediction
    assert os.listdir(tmpdir) == [] and processes_mentioning(tmpdir) == []

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verity tamper proof end to end without KIWI: a disk whose root partition is erofs + dm-verity (made as KIWI
makes it) boots on OVMF + swtpm from a UKI whose initrd opens it with veritysetup --panic-on-corruption
(verity_guest.py); intact it reaches userspace on the verified root, with one flipped byte the kernel panics
"dm-verity device corrupted" and measured_boot reports boot_failed: verity. Three boots, ~20-60 s each (TCG).
"""
import os
import shutil
import sys
import tempfile

import pytest

import verity_disk
import verity_guest
from ansible_collections.attestable.ami.plugins.module_utils._boot import esp as esp_image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "measured_boot"))
from measured_boot_helpers import INIT_PROLOGUE, build_uki, processes_mentioning, uki_with_init  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def verity_boot(verity_image):
    """dict(uki, disk, tampered): the bootable UKI (real veritytab in its initrd) on a disk with the verity root."""
    work = verity_image["dir"]
    base = build_uki(os.path.join(work, "base.efi"))
    veritytab = verity_disk.veritytab_line(verity_image["verity"])
    uki = uki_with_init(base, INIT_PROLOGUE + verity_guest.VERITY_INIT, os.path.join(work, "boot.efi"),
                        verity_guest.initrd_files(veritytab))
    esp = esp_image.make_esp(os.path.join(work, "esp.img"), {"EFI/BOOT/BOOTX64.EFI": uki})
    disk = verity_disk.make_disk(os.path.join(work, "boot.raw"), verity_image["filesystem"], esp=esp)
    tampered = os.path.join(work, "boot.tampered.raw")
    shutil.copyfile(disk, tampered)
    verity_disk.flip_byte(tampered, verity_disk.root_partition_offset(tampered) + 1024 * 1024 + 17)
    return {"uki": uki, "disk": disk, "tampered": tampered}


@pytest.fixture
def short_tmpdir():
    path = tempfile.mkdtemp(prefix="vbt-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


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
        expected: "{{ prediction.measurements }}"
      ignore_errors: true

    - name: Boot expecting dm-verity to stop it
      attestable.ami.measured_boot:
        disk: "{{ disk }}"
        until: userspace
        expect_boot_failure: verity
        expected: "{{ prediction.measurements }}"
      ignore_errors: true
      when: tampered | bool
"""


def test_the_intact_verity_root_verifies_and_boots_to_userspace(run_playbook, verity_image, verity_boot,
                                                                short_tmpdir):
    run = run_playbook(PROVE, extra_vars={"uki": verity_boot["uki"], "disk": verity_boot["disk"], "tampered": False},
                       env={"TMPDIR": short_tmpdir})
    assert run.rc == 0, run.stdout[-3000:]
    verity = run.task("Verify the root partition against the UKI's veritytab")
    assert verity["verified"] is True and verity["root_hash"] == verity_image["verity"]["root_hash"]
    boot = run.task("Boot to userspace")
    print("verity root to userspace: %s s" % boot.get("boot_seconds"))
    assert not boot.get("failed"), boot.get("msg")
    assert boot["reached_userspace"] is True and boot["boot_failed"] is None
    assert boot["measured"] == run.task("Predict")["measurements"]
    # the guest read the file through dm-verity from the erofs root
    assert "guest-file: %s  /mnt/usr/bin/tool" % verity_image["tool_sha256"] in boot["console_tail"], \
        boot["console_tail"]
    assert 'guest-root: NAME="verity test"' in boot["console_tail"]
    assert os.listdir(short_tmpdir) == [] and processes_mentioning(short_tmpdir) == []


def test_a_flipped_byte_of_the_root_partition_stops_the_boot_with_dm_verity(run_playbook, verity_boot,
                                                                            short_tmpdir):
    run = run_playbook(PROVE, extra_vars={"uki": verity_boot["uki"], "disk": verity_boot["tampered"],
                                          "tampered": True}, env={"TMPDIR": short_tmpdir})
    assert run.rc == 0, run.stdout[-3000:]
    verity = run.task("Verify the root partition against the UKI's veritytab")
    assert verity["verified"] is False and verity["actual_root_hash"] != verity["root_hash"]
    boot = run.task("Boot to userspace")
    print("tampered verity root fails after: %s s" % boot.get("boot_seconds"))
    assert boot["failed"]
    assert boot["boot_failed"] == "verity"
    assert boot["reached_userspace"] is False
    assert "dm-verity found the verity-protected root corrupted" in boot["msg"]
    assert any("dm-verity device corrupted" in line for line in boot["console_tail"]), boot["console_tail"]
    assert not any(line.startswith("guest-file: ") and "/mnt/usr/bin/tool" in line for line in boot["console_tail"])
    proof = run.task("Boot expecting dm-verity to stop it")
    assert not proof.get("failed"), proof.get("msg")
    assert proof["boot_failed"] == "verity"
    # the firmware measured the same UKI: the prediction still holds for the tampered disk
    assert proof["differing"] == []
    assert os.listdir(short_tmpdir) == [] and processes_mentioning(short_tmpdir) == []

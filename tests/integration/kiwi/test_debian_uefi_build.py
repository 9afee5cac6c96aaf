# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role's own description, Debian flavour, built by attestable.ami.kiwi_build with the real kiwi-ng into a UEFI
oem disk on this machine (the vfat helpers of scripts/vfat/ stand in for the missing vfat driver), then checked
without trusting KIWI's own account: the ESP read with mtools, the UKI's sections with objcopy, the root hash from
the UKI's initrd, dm-verity verified in userspace, PCRs predicted by pcr_compute and measured by OVMF + swtpm
(measured_boot, to ExitBootServices). One build (tests/integration/debian_uefi_build.py) serves this module and tests/integration/verity; KIWI's shared cache
(/var/cache/kiwi) keeps its packages for the next run."""
import os
import shutil
import subprocess

import pytest

import uefi_disk
from kiwi_testlib import run_playbook_text

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="kiwi-ng system build needs root")]

HERE = os.path.dirname(os.path.abspath(__file__))
ACCESS_PATHS = {"openssh-server", "dropbear", "dropbear-bin", "cloud-init", "amazon-ssm-agent", "telnetd",
                "ec2-instance-connect", "grub-efi-amd64", "grub-pc", "grub-common"}


@pytest.fixture(scope="module")
def debian_uefi(debian_uefi_build):
    """The session's one build of the Debian flavour (tests/integration/debian_uefi_build.py)."""
    rendering = debian_uefi_build["rendering"]
    assert rendering["attestable"] is True and rendering["distribution"] == "debian"
    return debian_uefi_build


def test_disk_boots_the_uki_directly_from_its_esp(debian_uefi):
    build = debian_uefi["build"]
    disk, uki = build["disk"], build["uki"]
    assert disk.endswith(".raw") and uki == disk[:-len(".raw")] + ".efi"
    files = uefi_disk.esp_files(disk)
    # The hook made the UKI the removable-media loader and removed systemd-boot and its entries.
    assert "EFI/BOOT/BOOTX64.EFI" in files, files
    assert not [f for f in files if f.startswith(("EFI/Linux", "EFI/systemd", "loader"))], files
    with open(uki, "rb") as handle:
        assert uefi_disk.esp_read(disk, "EFI/BOOT/BOOTX64.EFI") == handle.read()
    esp = uefi_disk.esp_of(disk)
    assert esp["fstype"] == "vfat" and esp["size"] == 200 * 1024 * 1024
    image = uefi_disk.extract_partition(disk, esp, str(debian_uefi["workdir"] / "esp.img"))
    fsck = subprocess.run(["fsck.vfat", "-n", image], capture_output=True, text=True, check=False)
    os.remove(image)
    assert fsck.returncode == 0, fsck.stdout


def test_uki_carries_the_attestable_command_line_and_kiwis_initrd_modules(debian_uefi):
    uki = debian_uefi["build"]["uki"]
    cmdline = uefi_disk.uki_section(uki, ".cmdline", debian_uefi["workdir"]).rstrip(b"\x00").decode().split()
    for arg in ("console=ttyS0", "rd.shell=0", "systemd.getty_auto=false", "rd.kiwi.verity_options=panic-on-corruption",
                "root=overlay:MAPPER=verityroot"):
        assert arg in cmdline, cmdline
    initrd = uefi_disk.cpio_files(uefi_disk.uki_section(uki, ".initrd", debian_uefi["workdir"]))
    with open(os.path.join(debian_uefi["description"], "root", "usr", "lib", "dracut", "modules.d", "90kiwi-overlay",
                           "kiwi-overlay-root.sh"), "rb") as handle:
        assert handle.read() in initrd.values()  # KIWI 11's overlay script, not bookworm's 9.24 one
    assert any(name.endswith("kiwi-veritytab-setup.sh") for name in initrd), sorted(initrd)[:50]
    assert "usr/bin/bash" in initrd or "bin/bash" in initrd
    assert "etc/veritytab" in initrd


def test_readonly_root_verifies_against_the_root_hash_in_the_ukis_initrd(debian_uefi):
    build = debian_uefi["build"]
    initrd = uefi_disk.cpio_files(uefi_disk.uki_section(build["uki"], ".initrd", debian_uefi["workdir"]))
    fields = initrd["etc/veritytab"].decode().split()
    root_hash = fields[3]
    options = dict(option.partition("=")[::2] for option in fields[4].split(","))
    assert build["root_hash"] == root_hash and build["veritytab"]["source"] == "initrd"
    erofs = [p for p in uefi_disk.partitions(build["disk"]) if p["fstype"] == "erofs"]
    assert len(erofs) == 1
    partition = uefi_disk.extract_partition(build["disk"], erofs[0], str(debian_uefi["workdir"] / "root.img"))
    try:
        def verify(hash_hex):
            return subprocess.run(["veritysetup", "verify", partition, partition, hash_hex,
                                   "--hash-offset=" + options["hash-offset"]], capture_output=True, text=True, check=False)
        verified = verify(root_hash)
        assert verified.returncode == 0, verified.stderr
        with open(partition, "r+b") as handle:
            handle.seek(8192)
            byte = handle.read(1)
            handle.seek(8192)
            handle.write(bytes([byte[0] ^ 0x01]))
        assert verify(root_hash).returncode != 0
    finally:
        os.remove(partition)


def test_image_holds_the_kernel_and_kiwi_modules_but_no_access_path(debian_uefi):
    build = debian_uefi["build"]
    names = {package["name"] for package in build["packages"]}
    assert "linux-image-cloud-amd64" in names and "kiwi-dracut-overlay" in names
    assert not names & ACCESS_PATHS, names & ACCESS_PATHS


PCR_PLAYBOOK = """
- name: Predict and measure
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Predict
      attestable.ami.pcr_compute:
        images: ["{{ uki }}"]
      register: predicted

    - name: Measure
      attestable.ami.measured_boot:
        disk: "{{ disk }}"
        expected: "{{ predicted.measurements }}"
"""


@pytest.mark.skipif(not os.path.exists("/usr/share/OVMF/OVMF_CODE_4M.fd") or shutil.which("swtpm") is None,
                    reason="needs OVMF and swtpm")
def test_firmware_measures_what_pcr_compute_predicts(debian_uefi):
    build = debian_uefi["build"]
    proc, results, _data = run_playbook_text(PCR_PLAYBOOK, debian_uefi["workdir"],
                                             extra_vars={"uki": build["uki"], "disk": build["disk"]})
    assert proc.returncode == 0, proc.stdout[-4000:]
    predicted = results["Predict"][-1]["measurements"]
    measured = results["Measure"][-1]
    assert measured["differing"] == [], measured["comparison"]
    for pcr in ("PCR4", "PCR7", "PCR12"):
        assert measured["measured"][pcr] == predicted[pcr]

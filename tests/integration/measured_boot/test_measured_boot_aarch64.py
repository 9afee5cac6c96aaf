# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""measured_boot with arch=aarch64: an arm64 UKI from real parts on AAVMF + swtpm (one boot, ~10-40 s).

The engine cannot predict this UKI: Debian's arm64 stub 252 has no .sdmagic, so pcr_compute refuses to guess
the stub version (as AWS's tool does). The expected PCR4 is therefore computed here from its definition:
EV_EFI_ACTION string, separator, the UKI's Authenticode digest, the embedded kernel's (stub 252, standard boot).
"""
import hashlib
import os
import shutil

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._pcr.authenticode import PeImage, authenticode_digest
from measured_boot_helpers import STANDARD_BOOT_PCR7, build_uki

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("qemu-system-aarch64") and shutil.which("aarch64-linux-gnu-objcopy")
                            and os.path.exists("/usr/share/AAVMF/AAVMF_CODE.fd")),
                       reason="qemu-system-arm, qemu-efi-aarch64 or binutils-aarch64-linux-gnu not installed"),
]

BOOT = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Boot the arm64 UKI
      attestable.ami.measured_boot:
        uki: "{{ uki }}"
        arch: aarch64
        expected: "{{ expected }}"
"""


def _pcr4_events(path):
    with open(path, "rb") as handle:
        data = handle.read()
    image = PeImage(data, path)
    kernel = image.section_content(image.section(".linux"))
    return [hashlib.sha384(b"Calling EFI Application from Boot Option").digest(),
            hashlib.sha384(b"\0\0\0\0").digest(),
            authenticode_digest(data), authenticode_digest(kernel)]


def test_arm64_uki_on_aavmf(run_playbook, parts_dir):
    uki = build_uki(os.path.join(parts_dir, "uki-arm64.efi"), "--arch", "aarch64")
    events = _pcr4_events(uki)
    pcr4 = b"\0" * 48
    for digest in events:
        pcr4 = hashlib.sha384(pcr4 + digest).digest()
    expected = {"HashAlgorithm": "SHA384", "PCR4": pcr4.hex(), "PCR7": STANDARD_BOOT_PCR7, "PCR12": "0" * 96}
    run = run_playbook(BOOT, extra_vars={"uki": uki, "expected": expected})
    boot = run.task("Boot the arm64 UKI")
    assert not boot.get("failed"), boot.get("msg")
    assert boot["stop_reason"] == "exit_boot_services"
    assert boot["measured"] == expected
    assert [e["digests"]["sha384"] for e in boot["events"] if e["pcr"] == 4] == [d.hex() for d in events]

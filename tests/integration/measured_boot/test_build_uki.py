# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""scripts/build-uki.sh: a UKI from real parts, reproducible, and an sbsign-signed variant."""
import hashlib
import os
import struct
import subprocess

import pefile
import pytest

from measured_boot_helpers import build_uki

pytestmark = pytest.mark.slow


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_two_builds_are_byte_identical(uki, tmp_path):
    again = build_uki(str(tmp_path / "again.efi"))
    assert _sha256(again) == _sha256(uki)


def test_uki_holds_the_real_parts_and_no_timestamp(uki):
    pe = pefile.PE(uki, fast_load=True)
    names = [s.Name.rstrip(b"\0").decode() for s in pe.sections]
    for section in (".sdmagic", ".osrel", ".cmdline", ".linux", ".initrd"):
        assert section in names
    assert pe.FILE_HEADER.TimeDateStamp == 0
    linux = pe.sections[names.index(".linux")]
    kernel = linux.get_data()[:min(linux.Misc_VirtualSize, linux.SizeOfRawData)]
    assert kernel[:2] == b"MZ" and kernel[0x202:0x206] == b"HdrS"  # a PE-bootable Linux bzImage
    sdmagic = pe.sections[names.index(".sdmagic")].get_data()
    assert b"systemd-stub 252" in sdmagic
    initrd = pe.sections[names.index(".initrd")].get_data()
    assert initrd[:6] == b"070701"  # cpio newc
    assert b"poweroff" in initrd


def test_signed_uki_verifies_only_with_its_certificate(uki, secure_boot):
    ok = subprocess.run(["sbverify", "--cert", secure_boot["cert"], secure_boot["uki"]], capture_output=True,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    unsigned = subprocess.run(["sbverify", "--cert", secure_boot["cert"], uki], capture_output=True, check=False)
    assert unsigned.returncode != 0
    with open(secure_boot["uki"], "rb") as handle:
        data = handle.read()
    pe_offset = struct.unpack_from("<I", data, 0x3C)[0]
    assert data[pe_offset:pe_offset + 4] == b"PE\0\0"
    assert not any(name.endswith(".key") for name in os.listdir(os.path.dirname(secure_boot["uki"])))

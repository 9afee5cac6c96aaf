# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Authenticode digests of real PE32+ images, checked against firmware measurements and osslsigncode."""
import hashlib
import os
import re
import struct
import subprocess

import pytest

import pcr_test_images as images
from ansible_collections.attestable.ami.plugins.module_utils._pcr.authenticode import ImageError, PeImage


def load(path):
    with open(path, "rb") as handle:
        return handle.read()


def firmware_application_digests():
    """EV_EFI_BOOT_SERVICES_APPLICATION digests OVMF extended into PCR4 booting the vector: [UKI, kernel]."""
    return [e["digests"] for e in images.vector_events() if e["pcr"] == 4
            and e["type"] == "EV_EFI_BOOT_SERVICES_APPLICATION"]


def test_vector_uki_digest_is_what_the_firmware_measured():
    path = os.path.join(images.vector(), "uki.efi")
    uki_measured, kernel_measured = firmware_application_digests()
    pe = PeImage(load(path), path)
    assert {k: v.hex() for k, v in pe.authenticode_digests(("sha384", "sha256")).items()} == uki_measured
    kernel = PeImage(pe.section_content(pe.section(".linux")), "kernel")
    assert {k: v.hex() for k, v in kernel.authenticode_digests(("sha384", "sha256")).items()} == kernel_measured


def test_kernel_is_virtual_size_not_raw_size():
    """The embedded kernel is min(VirtualSize, SizeOfRawData) bytes; the file-aligned raw size hashes differently."""
    path = os.path.join(images.vector(), "uki.efi")
    pe = PeImage(load(path), path)
    linux = pe.section(".linux")
    assert linux.virtual_size < linux.size_of_raw_data  # the vector has alignment padding: the rule matters here
    padded = PeImage(pe.data[linux.pointer_to_raw_data:linux.pointer_to_raw_data + linux.size_of_raw_data], "padded")
    _uki, kernel_measured = firmware_application_digests()
    assert padded.authenticode_digests()["sha384"].hex() != kernel_measured["sha384"]


def osslsigncode_digest(path):
    out = subprocess.run(["osslsigncode", "verify", "-in", path], capture_output=True, text=True, check=False).stdout
    match = re.search(r"Calculated message digest\s*:\s*([0-9A-Fa-f]+)", out)
    assert match, out
    return match.group(1).lower()


@pytest.mark.parametrize("signer_tool", ["sbsign", "osslsigncode"])
def test_digest_matches_osslsigncode(tmp_path, signer_tool):
    """osslsigncode (an independent Authenticode implementation) recomputes the digest of a signed file."""
    images.need("osslsigncode")
    signer = images.Signer(tmp_path, "codesign")
    uki = images.build_uki(tmp_path)
    if signer_tool == "sbsign":  # sbsign signs with SHA-256
        signed, bank = signer.sign(uki), "sha256"
    else:
        signed, bank = str(tmp_path / "osslsigned.efi"), "sha384"
        images.run("osslsigncode", "sign", "-h", "sha384", "-certs", signer.cert, "-key", signer.key,
                   "-in", uki, "-out", signed)
    assert PeImage(load(signed), signed).authenticode_digests((bank,))[bank].hex() == osslsigncode_digest(signed)


def test_signing_changes_the_digest_and_adds_one_signature(tmp_path):
    signer = images.Signer(tmp_path, "codesign")
    unsigned = images.build_uki(tmp_path)
    signed = signer.sign(unsigned)
    before, after = PeImage(load(unsigned)), PeImage(load(signed))
    assert before.cert_table_size == 0 and before.certificates() == []
    assert after.cert_table_size > 0 and len(after.certificates()) == 1
    # sbsign pads the file before appending the signature: the measured digest changes.
    assert before.authenticode_digests() != after.authenticode_digests()


def test_hash_ranges_skip_checksum_and_certificate_entry():
    images.need_file(images.SMALL_PE)
    data = bytearray(load(images.SMALL_PE))
    pe = PeImage(bytes(data))
    digest = pe.authenticode_digests()["sha384"]
    struct.pack_into("<I", data, pe.checksum_offset, 0xDEADBEEF)
    struct.pack_into("<II", data, pe.security_entry_offset, 0, 0)
    assert PeImage(bytes(data)).authenticode_digests()["sha384"] == digest
    data[pe.size_of_headers - 1] ^= 0xFF  # header padding is hashed
    assert PeImage(bytes(data)).authenticode_digests()["sha384"] != digest


def test_architecture_and_sections():
    images.need_file(images.STUB)
    pe = PeImage(load(images.STUB), images.STUB)
    assert pe.architecture == "x86_64"
    assert {".text", ".sdmagic", ".sbat"} <= {s.name for s in pe.sections}
    assert pe.section(".linux") is None


def test_ranges_cover_file_without_gaps_for_objcopy_output():
    images.need_file(images.STUB)
    data = load(images.STUB)
    ranges = PeImage(data).hash_ranges()
    covered = sum(end - start for start, end in ranges)
    assert covered == len(data) - 4 - 8  # everything but the checksum and the certificate directory entry
    expected = hashlib.sha384()
    for start, end in ranges:
        expected.update(data[start:end])
    assert PeImage(data).authenticode_digests()["sha384"] == expected.digest()


def test_pe32_is_refused():
    # No real 32-bit EFI binary ships in these Debian packages; the stub with its optional header magic set to
    # PE32 (0x10b) is what a 32-bit image presents first.
    images.need_file(images.STUB)
    data = bytearray(load(images.STUB))
    e_lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    struct.pack_into("<H", data, e_lfanew + 24, 0x10B)
    with pytest.raises(ImageError, match="32-bit PE"):
        PeImage(bytes(data))


@pytest.mark.parametrize("data,message", [
    (b"", "no 'MZ'"),
    (b"#!/bin/sh\necho not a PE\n" * 10, "no 'MZ'"),
    (b"MZ" + b"\0" * 58 + struct.pack("<I", 64) + b"NE\0\0" + b"\0" * 200, "no 'PE' signature"),
    (b"MZ" + b"\0" * 58 + struct.pack("<I", 4096) + b"\0" * 100, "truncated"),
])
def test_not_a_pe(data, message):
    with pytest.raises(ImageError, match=message):
        PeImage(data)


def test_elf_is_not_a_pe():
    with pytest.raises(ImageError, match="no 'MZ'"):
        PeImage(load("/bin/true"))


def test_section_beyond_end_is_truncated():
    images.need_file(images.STUB)
    data = load(images.STUB)
    last = max(PeImage(data).sections, key=lambda s: s.pointer_to_raw_data + s.size_of_raw_data)
    with pytest.raises(ImageError, match="truncated: section %s" % re.escape(last.name)):
        PeImage(data[:last.pointer_to_raw_data + 1])

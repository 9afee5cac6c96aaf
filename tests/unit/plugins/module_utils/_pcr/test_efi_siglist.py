# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""EFI signature lists: efitools' output parses, our writer matches it, malformed data is refused."""
import hashlib
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pcr_test_images as images
from ansible_collections.attestable.ami.plugins.module_utils._pcr import efi_siglist
from ansible_collections.attestable.ami.plugins.module_utils._pcr.efi_siglist import SignatureListError


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_cert_to_efi_sig_list_output_parses(tmp_path):
    signer = images.Signer(tmp_path, "db-cert")
    entries = efi_siglist.parse(read(signer.esl()))
    assert len(entries) == 1
    assert entries[0].is_x509
    assert entries[0].owner == images.OWNER
    assert entries[0].data == signer.der


def test_writer_is_byte_identical_to_efitools(tmp_path):
    signer = images.Signer(tmp_path, "db-cert")
    assert efi_siglist.build_x509_list(images.OWNER, signer.der) == read(signer.esl())


def test_several_lists_each_bounded_by_its_size(tmp_path):
    signer = images.Signer(tmp_path, "db-cert")
    empty_hash = hashlib.sha256(b"").digest()
    other = uuid.UUID("77777777-2222-3333-4444-555555555555")
    data = (efi_siglist.build_list(efi_siglist.EFI_CERT_SHA256_GUID, [(other, empty_hash), (other, b"\1" * 32)])
            + read(signer.esl()))
    entries = efi_siglist.parse(data)
    assert [(e.signature_type, e.owner) for e in entries] == [
        (efi_siglist.EFI_CERT_SHA256_GUID, other), (efi_siglist.EFI_CERT_SHA256_GUID, other),
        (efi_siglist.EFI_CERT_X509_GUID, images.OWNER)]
    assert entries[0].data == empty_hash and entries[2].data == signer.der


def test_signature_header_is_skipped():
    body = uuid.UUID(int=5).bytes_le + b"x" * 8
    data = struct.pack("<16sIII", efi_siglist.EFI_CERT_SHA256_GUID.bytes_le, 28 + 4 + len(body), 4, len(body))
    entries = efi_siglist.parse(data + b"HEAD" + body)
    assert len(entries) == 1 and entries[0].owner == uuid.UUID(int=5) and entries[0].data == b"x" * 8


def test_empty_data_is_an_empty_database():
    assert efi_siglist.parse(b"") == []


def header(list_size, header_size=0, sig_size=48, guid=efi_siglist.EFI_CERT_SHA256_GUID):
    return struct.pack("<16sIII", guid.bytes_le, list_size, header_size, sig_size)


@pytest.mark.parametrize("data,message", [
    (b"\0" * 20, "list header needs 28"),
    (header(20), "smaller than its headers"),
    (header(28 + 48) + b"\0" * 47, "runs past the end"),
    (header(28 + 40, sig_size=48) + b"\0" * 40, "not a multiple of SignatureSize 48"),
    (header(28 + 8, sig_size=8) + b"\0" * 8, "smaller than the 16-byte owner"),
    (header(28 + 48) + b"\0" * 48 + b"\1\2\3", "signature list 1 at offset 76"),
])
def test_malformed(data, message):
    with pytest.raises(SignatureListError, match=message):
        efi_siglist.parse(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_fail_cleanly(data):
    try:
        entries = efi_siglist.parse(data)
    except SignatureListError:
        return
    assert sum(len(e.data) + 16 for e in entries) <= len(data)


def test_writer_refuses_mixed_sizes():
    with pytest.raises(ValueError, match="same size"):
        efi_siglist.build_list(efi_siglist.EFI_CERT_SHA256_GUID, [(images.OWNER, b"a"), (images.OWNER, b"bb")])

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""EFI signature databases (the data of the PK, KEK, db and dbx variables): a reader and a writer.

Plain Python (3.9+), no Ansible imports. A database is a sequence of EFI_SIGNATURE_LIST records:

    SignatureType (GUID, 16 bytes) | SignatureListSize (u32) | SignatureHeaderSize (u32) | SignatureSize (u32)
    | SignatureHeader (SignatureHeaderSize bytes) | SignatureSize-byte EFI_SIGNATURE_DATA entries

and each EFI_SIGNATURE_DATA is SignatureOwner (GUID) | SignatureData. Every record is bounded by its own
SignatureListSize (a db may hold several lists, e.g. certificates and hashes).
"""

import struct
import uuid

EFI_CERT_X509_GUID = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
EFI_CERT_SHA256_GUID = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")
EFI_GLOBAL_VARIABLE_GUID = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE_GUID = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")

_LIST_HEADER = struct.Struct("<16sIII")
_OWNER_SIZE = 16


class SignatureListError(ValueError):
    """The bytes are not a well-formed sequence of EFI_SIGNATURE_LIST records; the message says where."""


class SignatureEntry(object):
    """One EFI_SIGNATURE_DATA: the list's type, the owner GUID and the signature data (bytes)."""

    __slots__ = ("signature_type", "owner", "data")

    def __init__(self, signature_type, owner, data):
        self.signature_type = signature_type
        self.owner = owner
        self.data = data

    @property
    def is_x509(self):
        return self.signature_type == EFI_CERT_X509_GUID

    def __repr__(self):
        return "SignatureEntry(%s, owner=%s, %d bytes)" % (self.signature_type, self.owner, len(self.data))


def parse(data):
    """All entries of all EFI_SIGNATURE_LISTs in ``data`` (bytes), in order. Empty data = no entries."""
    data = bytes(data)
    entries = []
    offset = 0
    index = 0
    while offset < len(data):
        if offset + _LIST_HEADER.size > len(data):
            raise SignatureListError("signature list %d at offset %d: %d bytes left, a list header needs %d"
                                     % (index, offset, len(data) - offset, _LIST_HEADER.size))
        type_bytes, list_size, header_size, sig_size = _LIST_HEADER.unpack_from(data, offset)
        signature_type = uuid.UUID(bytes_le=type_bytes)
        where = "signature list %d (type %s) at offset %d" % (index, signature_type, offset)
        if list_size < _LIST_HEADER.size + header_size:
            raise SignatureListError("%s: SignatureListSize %d is smaller than its headers (%d)"
                                     % (where, list_size, _LIST_HEADER.size + header_size))
        if offset + list_size > len(data):
            raise SignatureListError("%s: SignatureListSize %d runs past the end of the data (%d bytes)"
                                     % (where, list_size, len(data)))
        body = list_size - _LIST_HEADER.size - header_size
        if sig_size < _OWNER_SIZE:
            raise SignatureListError("%s: SignatureSize %d is smaller than the 16-byte owner GUID" % (where, sig_size))
        if body % sig_size:
            raise SignatureListError("%s: %d bytes of signatures are not a multiple of SignatureSize %d"
                                     % (where, body, sig_size))
        position = offset + _LIST_HEADER.size + header_size
        for _index in range(body // sig_size):
            owner = uuid.UUID(bytes_le=data[position:position + _OWNER_SIZE])
            entries.append(SignatureEntry(signature_type, owner, data[position + _OWNER_SIZE:position + sig_size]))
            position += sig_size
        offset += list_size
        index += 1
    return entries


def build_list(signature_type, entries):
    """One EFI_SIGNATURE_LIST (bytes) of ``entries`` [(owner UUID, data bytes)], all data the same size."""
    if not entries:
        raise ValueError("an EFI_SIGNATURE_LIST needs at least one entry")
    sizes = set(len(data) for _owner, data in entries)
    if len(sizes) != 1:
        raise ValueError("entries of one EFI_SIGNATURE_LIST must have the same size, got %s" % sorted(sizes))
    sig_size = _OWNER_SIZE + sizes.pop()
    body = b"".join(_as_uuid(owner).bytes_le + bytes(data) for owner, data in entries)
    header = _LIST_HEADER.pack(_as_uuid(signature_type).bytes_le, _LIST_HEADER.size + len(body), 0, sig_size)
    return header + body


def build_x509_list(owner, certificate_der):
    """An EFI_SIGNATURE_LIST holding one X.509 certificate (DER), as cert-to-efi-sig-list makes it."""
    return build_list(EFI_CERT_X509_GUID, [(owner, certificate_der)])


def _as_uuid(value):
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))

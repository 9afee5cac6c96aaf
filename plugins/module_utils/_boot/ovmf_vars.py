# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A copy of an edk2 (OVMF/AAVMF) variable store with Secure Boot keys enrolled from EFI signature lists.

Plain Python (3.9+), no Ansible imports, no third-party packages. The variable data written for PK, KEK, db
and dbx is exactly the bytes given (the ESL files), because firmware measures that data into PCR7 byte for
byte: the same ESL files given to ``pcr_compute`` then predict the PCR7 the firmware measures.

Layout (edk2 MdeModulePkg, authenticated variable store in a firmware volume):

    FV header (GUID EFI_SYSTEM_NV_DATA_FV, "_FVH", HeaderLength)
    VARIABLE_STORE_HEADER: Signature (gEfiAuthenticatedVariableGuid), Size u32, Format 0x5A, State 0xFE, 6 reserved
    AUTHENTICATED_VARIABLE_HEADER per variable: StartId 0x55AA u16, State u8, reserved u8, Attributes u32,
        MonotonicCount u64, TimeStamp EFI_TIME (16 bytes), PubKeyIndex u32, NameSize u32, DataSize u32,
        VendorGuid (16 bytes), then the UTF-16LE NUL-terminated name, the data, padding to 4 bytes
    0xFF up to the end of the store
"""

import struct
import uuid

from ansible_collections.attestable.ami.plugins.module_utils._common import atomic_file
from ansible_collections.attestable.ami.plugins.module_utils._pcr.efi_siglist import (
    EFI_GLOBAL_VARIABLE_GUID,
    EFI_IMAGE_SECURITY_DATABASE_GUID,
)

NV_DATA_FV_GUID = uuid.UUID("fff12b8d-7696-4c8b-a985-2747075b4f50")
AUTH_VARIABLE_STORE_GUID = uuid.UUID("aaf32c78-947b-439a-a180-2e144ec37792")
SECURE_BOOT_ENABLE_GUID = uuid.UUID("f0a30bc7-af08-4556-99c4-001009c93a44")
CUSTOM_MODE_GUID = uuid.UUID("c076ec0c-7028-4399-a072-71ee5c448b9f")

NON_VOLATILE = 0x1
BOOTSERVICE_ACCESS = 0x2
RUNTIME_ACCESS = 0x4
TIME_BASED_AUTHENTICATED_WRITE_ACCESS = 0x20
_KEY_ATTRIBUTES = NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS
_SETTING_ATTRIBUTES = NON_VOLATILE | BOOTSERVICE_ACCESS

KEY_VARIABLES = {
    "PK": EFI_GLOBAL_VARIABLE_GUID,
    "KEK": EFI_GLOBAL_VARIABLE_GUID,
    "db": EFI_IMAGE_SECURITY_DATABASE_GUID,
    "dbx": EFI_IMAGE_SECURITY_DATABASE_GUID,
}

_VAR_ADDED = 0x3F
_HEADER = struct.Struct("<HBxIQ16sIII16s")  # 60 bytes
# EFI_TIME 2010-01-01 00:00:00: the timestamp later authenticated writes must beat (as virt-fw-vars uses).
_INITIAL_TIME = struct.pack("<HBBBBBxIhBx", 2010, 1, 1, 0, 0, 0, 0, 0, 0)


class VarStoreError(ValueError):
    """The file is not an edk2 variable store, or the variables do not fit; the message names the file."""


class Variable(object):
    __slots__ = ("name", "guid", "attributes", "data", "count", "timestamp", "pubkey_index")

    def __init__(self, name, guid, attributes, data, count=0, timestamp=b"\0" * 16, pubkey_index=0):
        self.name = name
        self.guid = guid
        self.attributes = attributes
        self.data = data
        self.count = count
        self.timestamp = timestamp
        self.pubkey_index = pubkey_index

    def key(self):
        return (self.name, self.guid)

    def to_bytes(self):
        name = (self.name + "\0").encode("utf-16-le")
        blob = _HEADER.pack(0x55AA, _VAR_ADDED, self.attributes, self.count, self.timestamp, self.pubkey_index,
                            len(name), len(self.data), self.guid.bytes_le) + name + self.data
        return blob + b"\xff" * (-len(blob) % 4)


def _store_range(image, path):
    """(start of the first variable, end of the store) inside the flash image."""
    offset = 0
    while offset + 64 <= len(image):
        if image[offset + 16:offset + 32] == NV_DATA_FV_GUID.bytes_le and image[offset + 40:offset + 44] == b"_FVH":
            header_length = struct.unpack_from("<H", image, offset + 48)[0]
            store = offset + header_length
            if image[store:store + 16] != AUTH_VARIABLE_STORE_GUID.bytes_le:
                raise VarStoreError("%s: the variable store is not an authenticated edk2 store" % path)
            size, store_format, state = struct.unpack_from("<IBB", image, store + 16)
            if store_format != 0x5A or state != 0xFE:
                raise VarStoreError("%s: the variable store is not formatted and healthy" % path)
            return store + 28, store + size
        offset += 1024
    raise VarStoreError("%s: no edk2 variable store (EFI_SYSTEM_NV_DATA firmware volume) found; expected a "
                        "file such as /usr/share/OVMF/OVMF_VARS_4M.fd" % path)


def read_variables(image, path="variable store"):
    """The live variables of a flash image (bytes), in store order."""
    start, end = _store_range(image, path)
    variables = []
    pos = start
    while pos + _HEADER.size <= end:
        (start_id, state, attributes, count, timestamp, pubkey_index, name_size, data_size,
         guid) = _HEADER.unpack_from(image, pos)
        if start_id != 0x55AA:
            break
        name_at = pos + _HEADER.size
        if name_at + name_size + data_size > end:
            raise VarStoreError("%s: variable at offset %d runs past the end of the store" % (path, pos))
        if state == _VAR_ADDED:
            name = image[name_at:name_at + name_size].decode("utf-16-le").rstrip("\0")
            data = image[name_at + name_size:name_at + name_size + data_size]
            variables.append(Variable(name, uuid.UUID(bytes_le=guid), attributes, data, count, timestamp,
                                      pubkey_index))
        pos = (name_at + name_size + data_size + 3) & ~3
    return variables


def enroll(template_path, dest_path, pk=None, kek=None, db=None, dbx=None):
    """Write a copy of template_path to dest_path with the given key databases (ESL bytes) stored verbatim.

    PK given = Secure Boot: SecureBootEnable is set to 1 and CustomMode to 0, so the firmware enforces
    signature checks (user mode). A database given as None keeps whatever the template holds.
    """
    try:
        with open(template_path, "rb") as handle:
            image = handle.read()
    except (IOError, OSError) as exc:
        raise VarStoreError("%s: cannot read the variable store template (%s)" % (template_path, exc))
    start, end = _store_range(image, template_path)
    variables = read_variables(image, template_path)
    updates = []
    for name, data in (("PK", pk), ("KEK", kek), ("db", db), ("dbx", dbx)):
        if data is not None:
            updates.append(Variable(name, KEY_VARIABLES[name], _KEY_ATTRIBUTES, bytes(data), 0, _INITIAL_TIME))
    if pk is not None:
        updates.append(Variable("SecureBootEnable", SECURE_BOOT_ENABLE_GUID, _SETTING_ATTRIBUTES, b"\x01"))
        updates.append(Variable("CustomMode", CUSTOM_MODE_GUID, _SETTING_ATTRIBUTES, b"\x00"))
    replaced = set(v.key() for v in updates)
    variables = [v for v in variables if v.key() not in replaced] + updates
    blob = b"".join(v.to_bytes() for v in variables)
    if len(blob) > end - start:
        raise VarStoreError("%s: the keys need %d bytes but the variable store holds only %d"
                            % (template_path, len(blob), end - start))
    result = image[:start] + blob + b"\xff" * (end - start - len(blob)) + image[end:]
    try:
        atomic_file.write_bytes(dest_path, result)
    except atomic_file.UnsafeFileError as exc:
        raise VarStoreError("cannot write the variable store copy: %s" % exc)
    return dest_path

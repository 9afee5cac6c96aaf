# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ovmf_vars: Secure Boot keys enrolled verbatim into a copy of an edk2 variable store."""
import os
import struct
import uuid

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._boot import ovmf_vars

REAL_TEMPLATE = "/usr/share/OVMF/OVMF_VARS_4M.fd"


def synthetic_store(path, store_size=4096, fv_offset=0):
    """A minimal edk2 flash image: firmware volume header, empty authenticated variable store, more flash."""
    header_length = 72
    fv = b"\0" * 16 + ovmf_vars.NV_DATA_FV_GUID.bytes_le
    fv += struct.pack("<QIIHHHxB", header_length + store_size + 4096, 0x4856465F, 0x4FEFF, header_length, 0, 0, 2)
    fv += b"\0" * (header_length - len(fv))
    store = ovmf_vars.AUTH_VARIABLE_STORE_GUID.bytes_le + struct.pack("<IBB6x", store_size, 0x5A, 0xFE)
    store += b"\xff" * (store_size - len(store))
    image = b"\xff" * fv_offset + fv + store + b"\x5a" * 4096  # the FTW area after the store must survive
    with open(path, "wb") as handle:
        handle.write(image)
    return path


def by_name(path):
    with open(path, "rb") as handle:
        return dict((v.name, v) for v in ovmf_vars.read_variables(handle.read()))


def test_keys_are_enrolled_byte_for_byte_and_secure_boot_enabled(tmp_path):
    template = synthetic_store(str(tmp_path / "vars.fd"))
    with open(template, "rb") as handle:
        original = handle.read()
    pk, kek, db, dbx = b"PK-esl-bytes", b"KEK" * 7, os.urandom(901), b"\x00" * 77
    dest = ovmf_vars.enroll(template, str(tmp_path / "copy.fd"), pk=pk, kek=kek, db=db, dbx=dbx)
    variables = by_name(dest)
    assert variables["PK"].data == pk and variables["KEK"].data == kek
    assert variables["db"].data == db and variables["dbx"].data == dbx
    assert variables["PK"].guid == uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
    assert variables["db"].guid == uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
    assert variables["db"].attributes == 0x27  # NV | BS | RT | time-based authenticated write
    assert variables["SecureBootEnable"].data == b"\x01"
    assert variables["CustomMode"].data == b"\x00"
    with open(template, "rb") as handle:
        assert handle.read() == original  # the template is only read
    with open(dest, "rb") as handle:
        copy = handle.read()
    assert len(copy) == len(original) and copy[-4096:] == original[-4096:]


def test_enrolling_again_replaces_instead_of_duplicating(tmp_path):
    template = synthetic_store(str(tmp_path / "vars.fd"), fv_offset=2048)
    first = ovmf_vars.enroll(template, str(tmp_path / "one.fd"), pk=b"old", db=b"old-db")
    second = ovmf_vars.enroll(first, str(tmp_path / "two.fd"), pk=b"new")
    with open(second, "rb") as handle:
        names = [v.name for v in ovmf_vars.read_variables(handle.read())]
    assert sorted(names) == sorted(set(names))
    variables = by_name(second)
    assert variables["PK"].data == b"new" and variables["db"].data == b"old-db"


def test_without_pk_secure_boot_stays_off(tmp_path):
    dest = ovmf_vars.enroll(synthetic_store(str(tmp_path / "v.fd")), str(tmp_path / "c.fd"), db=b"db")
    assert "SecureBootEnable" not in by_name(dest)


def test_keys_that_do_not_fit_are_refused(tmp_path):
    template = synthetic_store(str(tmp_path / "v.fd"), store_size=512)
    with pytest.raises(ovmf_vars.VarStoreError, match="holds only"):
        ovmf_vars.enroll(template, str(tmp_path / "c.fd"), db=b"x" * 1000)
    assert not os.path.exists(str(tmp_path / "c.fd"))


def test_a_file_that_is_no_variable_store_is_named(tmp_path):
    bogus = tmp_path / "bogus.fd"
    bogus.write_bytes(b"\0" * 8192)
    with pytest.raises(ovmf_vars.VarStoreError, match="bogus.fd: no edk2 variable store"):
        ovmf_vars.enroll(str(bogus), str(tmp_path / "c.fd"), pk=b"x")
    with pytest.raises(ovmf_vars.VarStoreError, match="cannot read"):
        ovmf_vars.enroll(str(tmp_path / "missing.fd"), str(tmp_path / "c.fd"), pk=b"x")


@pytest.mark.skipif(not os.path.exists(REAL_TEMPLATE), reason="Debian's ovmf package is not installed")
def test_debian_ovmf_template(tmp_path):
    dest = ovmf_vars.enroll(REAL_TEMPLATE, str(tmp_path / "vars.fd"), pk=b"pk", kek=b"kek", db=b"db")
    assert os.path.getsize(dest) == os.path.getsize(REAL_TEMPLATE)
    assert by_name(dest)["KEK"].data == b"kek"

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PCR engine against real firmware measurements (the vector) and real signed UKIs."""
import hashlib
import os
import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pcr_test_images as images
from ansible_collections.attestable.ami.plugins.module_utils._pcr import efi_siglist, engine as pcr_engine
from ansible_collections.attestable.ami.plugins.module_utils._pcr.engine import PcrError
from ansible_collections.attestable.ami.plugins.module_utils._pcr.authenticode import PeImage

GLOBAL = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
IMAGE_SECURITY_DB = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
# attestation.md: PCR7 of a standard boot (no PK), as the AWS tool reports it.
STANDARD_BOOT_PCR7 = ("98441c7f7625d10058c47683aec486ce311c633235eb555593a7ee791121e3578a"
                      "e72d04ecef661f272d59058b77af35")


def fold(bank, digests):
    value = b"\0" * hashlib.new(bank).digest_size
    for digest in digests:
        value = hashlib.new(bank, value + digest).digest()
    return value.hex()


def variable_digest(bank, guid, name, data):
    """UEFI_VARIABLE_DATA digest, written out from the TCG spec layout (independent of the engine's helper)."""
    blob = guid.bytes_le + struct.pack("<Q", len(name)) + struct.pack("<Q", len(data)) + name.encode("utf-16-le")
    return hashlib.new(bank, blob + data).digest()


def sha(bank, data):
    return hashlib.new(bank, data).digest()


def authenticode(path, bank="sha384"):
    with open(path, "rb") as handle:
        return PeImage(handle.read(), path).authenticode_digests((bank,))[bank]


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


# -- the vector: what OVMF + swtpm measured ------------------------------------------------------------------

@pytest.fixture(scope="module")
def vector_result():
    return pcr_engine.compute([os.path.join(images.vector(), "uki.efi")], banks=("sha384", "sha256"))


def test_vector_pcr_values(vector_result):
    measured = images.vector_measured()
    assert vector_result["measurements"] == {"HashAlgorithm": "SHA384", "PCR4": measured["sha384"]["PCR4"],
                                             "PCR7": measured["sha384"]["PCR7"], "PCR12": measured["sha384"]["PCR12"]}
    assert vector_result["banks"]["sha256"]["PCR4"] == measured["sha256"]["PCR4"]
    assert vector_result["banks"]["sha384"] == dict((k, measured["sha384"][k]) for k in ("PCR4", "PCR7", "PCR12"))
    assert vector_result["images"][0]["sha256"] == measured["uki_sha256"]
    assert measured["sha384"]["PCR7"] == STANDARD_BOOT_PCR7


@pytest.mark.parametrize("pcr", [4, 7])
def test_vector_events_are_the_firmware_events(vector_result, pcr):
    """Our event sequence for PCR4 and PCR7 is the firmware's, event by event, in both banks."""
    firmware = [(e["type"], e["digests"]) for e in images.vector_events() if e["pcr"] == pcr]
    ours = [(e["type"], e["digests"]) for e in vector_result["events"] if e["pcr"] == pcr]
    assert ours == firmware


def test_events_say_what_was_hashed(vector_result):
    uki_event = [e for e in vector_result["events"] if e["type"] == "EV_EFI_BOOT_SERVICES_APPLICATION"]
    assert "uki.efi" in uki_event[0]["description"]
    assert ".linux" in uki_event[1]["description"] and "252" in uki_event[1]["description"]


# -- standard boot of UKIs built here -----------------------------------------------------------------------

def test_several_images_in_load_order(tmp_path):
    first = images.build_uki(tmp_path, name="a.efi")
    second = images.SMALL_PE
    result = pcr_engine.compute([second, first], banks=("sha256",))
    kernel = authenticode(images.SMALL_PE)
    expected = [sha("sha384", pcr_engine.CALLING_EFI_APPLICATION), sha("sha384", b"\0" * 4),
                authenticode(second), authenticode(first), kernel]
    assert result["measurements"]["PCR4"] == fold("sha384", expected)
    assert result["measurements"]["PCR7"] == STANDARD_BOOT_PCR7
    assert result["measurements"]["PCR12"] == "0" * 96
    assert set(result["banks"]) == {"sha384", "sha256"}  # sha384 is always computed
    assert [i["uki"] is not None for i in result["images"]] == [False, True]


def test_stub_258_measures_no_kernel(tmp_path):
    path = images.build_uki(tmp_path, sdmagic="#### LoaderInfo: systemd-stub 258.2-1 ####")
    result = pcr_engine.compute([path])
    expected = [sha("sha384", pcr_engine.CALLING_EFI_APPLICATION), sha("sha384", b"\0" * 4), authenticode(path)]
    assert result["measurements"]["PCR4"] == fold("sha384", expected)
    assert len([e for e in result["events"] if e["pcr"] == 4]) == 3


def test_extend():
    old, digest = b"\1" * 48, b"\2" * 48
    assert pcr_engine.extend("sha384", old, digest) == hashlib.sha384(old + digest).digest()


# -- Secure Boot ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secure_boot(tmp_path_factory):
    """Platform key, KEK and two db signers (openssl); UKIs signed with sbsign; ESLs from cert-to-efi-sig-list."""
    directory = tmp_path_factory.mktemp("secure-boot")
    keys = dict((name, images.Signer(directory, name)) for name in ("pk", "kek", "db1", "db2"))
    owner2 = uuid.UUID("99999999-2222-3333-4444-555555555555")
    db1_esl = read(keys["db1"].esl())
    db2_esl = read(keys["db2"].esl(owner=owner2))
    dummy_dbx = efi_siglist.build_list(efi_siglist.EFI_CERT_SHA256_GUID, [(images.OWNER, hashlib.sha256().digest())])
    # db: a hash list first, then both certificates, to exercise several lists in one variable.
    hash_list = efi_siglist.build_list(efi_siglist.EFI_CERT_SHA256_GUID, [(owner2, b"\7" * 32)])
    files = {
        "pk": keys["pk"].esl(),
        "kek": keys["kek"].esl(),
        "db": images.write(directory / "db.esl", hash_list + db1_esl + db2_esl),
        "dbx": images.write(directory / "dbx.esl", dummy_dbx),
    }
    ukis = {
        "a1": keys["db1"].sign(images.build_uki(directory, name="a.efi")),
        "b1": keys["db1"].sign(images.build_uki(directory, name="b.efi", cmdline="other")),
        "c2": keys["db2"].sign(images.build_uki(directory, name="c.efi")),
        "unsigned": images.build_uki(directory, name="u.efi"),
        "kek_signed": keys["kek"].sign(images.build_uki(directory, name="k.efi")),
    }
    return {"keys": keys, "files": files, "ukis": ukis, "owner2": owner2}


def expected_pcr7(bank, files, authorities):
    digests = [variable_digest(bank, GLOBAL, "SecureBoot", b"\1")]
    for name, guid, option in (("PK", GLOBAL, "pk"), ("KEK", GLOBAL, "kek"), ("db", IMAGE_SECURITY_DB, "db"),
                               ("dbx", IMAGE_SECURITY_DB, "dbx")):
        digests.append(variable_digest(bank, guid, name, read(files[option]) if files.get(option) else b""))
    digests.append(sha(bank, b"\0" * 4))
    for owner, der in authorities:
        digests.append(variable_digest(bank, IMAGE_SECURITY_DB, "db", owner.bytes_le + der))
    return fold(bank, digests)


def test_secure_boot_one_signed_uki(secure_boot):
    files, uki = secure_boot["files"], secure_boot["ukis"]["a1"]
    result = pcr_engine.compute([uki], banks=("sha384", "sha256"), **files)
    db1 = secure_boot["keys"]["db1"].der
    for bank in ("sha384", "sha256"):
        # Stub 252 under Secure Boot: no kernel event.
        assert result["banks"][bank]["PCR4"] == fold(bank, [sha(bank, pcr_engine.CALLING_EFI_APPLICATION),
                                                            sha(bank, b"\0" * 4), authenticode(uki, bank)])
        assert result["banks"][bank]["PCR7"] == expected_pcr7(bank, files, [(images.OWNER, db1)])
    assert result["secure_boot"] is True
    assert [e["type"] for e in result["events"] if e["pcr"] == 7][-1] == "EV_EFI_VARIABLE_AUTHORITY"


def test_secure_boot_authorities_deduplicated_in_load_order(secure_boot):
    files, ukis, keys = secure_boot["files"], secure_boot["ukis"], secure_boot["keys"]
    result = pcr_engine.compute([ukis["c2"], ukis["a1"], ukis["b1"]], **files)
    authorities = [(secure_boot["owner2"], keys["db2"].der), (images.OWNER, keys["db1"].der)]
    assert result["measurements"]["PCR7"] == expected_pcr7("sha384", files, authorities)
    assert len([e for e in result["events"] if e["type"] == "EV_EFI_VARIABLE_AUTHORITY"]) == 2


def test_secure_boot_missing_variables_are_empty(secure_boot):
    files = {"pk": secure_boot["files"]["pk"], "db": secure_boot["files"]["db"]}
    result = pcr_engine.compute([secure_boot["ukis"]["a1"]], **files)
    assert result["measurements"]["PCR7"] == expected_pcr7(
        "sha384", files, [(images.OWNER, secure_boot["keys"]["db1"].der)])


def test_secure_boot_dbx_changes_pcr7(secure_boot):
    files = dict(secure_boot["files"])
    with_dbx = pcr_engine.compute([secure_boot["ukis"]["a1"]], **files)["measurements"]["PCR7"]
    files.pop("dbx")
    without = pcr_engine.compute([secure_boot["ukis"]["a1"]], **files)["measurements"]["PCR7"]
    assert with_dbx != without


def test_same_pk_without_secure_boot_differs(secure_boot):
    files = dict(secure_boot["files"])
    uki = secure_boot["ukis"]["a1"]
    secure = pcr_engine.compute([uki], **files)
    files.pop("pk")
    standard = pcr_engine.compute([uki], **files)
    assert secure["measurements"]["PCR4"] != standard["measurements"]["PCR4"]  # standard boot measures the kernel
    assert not any(e["type"] == "EV_EFI_VARIABLE_AUTHORITY" for e in standard["events"])


@pytest.mark.parametrize("uki,reason", [("unsigned", "the image is unsigned"), ("kek_signed", "none of its signing")])
def test_secure_boot_image_not_authorised_by_db(secure_boot, uki, reason):
    path = secure_boot["ukis"][uki]
    with pytest.raises(PcrError, match=reason) as info:
        pcr_engine.compute([path], **secure_boot["files"])
    assert path in str(info.value)


def test_al2023_uki_without_sdmagic(secure_boot, tmp_path):
    """AL2023's stub counts as 252: the kernel is measured in standard boot, not under Secure Boot."""
    uki = secure_boot["keys"]["db1"].sign(images.build_uki(tmp_path, osrel=images.AL2023_OSREL, remove_sdmagic=True))
    standard = pcr_engine.compute([uki])
    secure = pcr_engine.compute([uki], **secure_boot["files"])
    assert [e["type"] for e in standard["events"] if e["pcr"] == 4][2:] == ["EV_EFI_BOOT_SERVICES_APPLICATION"] * 2
    assert standard["events"][3]["digests"]["sha384"] == authenticode(images.SMALL_PE).hex()
    assert len([e for e in secure["events"] if e["pcr"] == 4]) == 3
    assert secure["images"][0]["uki"]["stub_major"] == 252


def test_secure_boot_without_db(secure_boot):
    with pytest.raises(PcrError, match="no db was given"):
        pcr_engine.compute([secure_boot["ukis"]["a1"]], pk=secure_boot["files"]["pk"])


# -- bad input ------------------------------------------------------------------------------------------------

def test_missing_image(tmp_path):
    with pytest.raises(PcrError, match=r"image .*/nope\.efi: no such file"):
        pcr_engine.compute([str(tmp_path / "nope.efi")])


def test_missing_esl(tmp_path):
    images.need_file(images.STUB)
    with pytest.raises(PcrError, match=r"db signature list .*/db\.esl: no such file"):
        pcr_engine.compute([images.STUB], pk=images.STUB, db=str(tmp_path / "db.esl"))


def test_malformed_esl(tmp_path):
    images.need_file(images.STUB)
    bad = images.write(tmp_path / "kek.esl", b"\0" * 16 + struct.pack("<III", 999, 0, 16))
    with pytest.raises(PcrError, match=r"kek signature list .*kek\.esl: not a valid EFI_SIGNATURE_LIST file: "
                                       r"signature list 0 .* runs past the end"):
        pcr_engine.compute([images.STUB], kek=bad)


def test_not_a_pe(tmp_path):
    path = images.write(tmp_path / "text.efi", b"hello\n" * 100)
    with pytest.raises(PcrError, match=r"image .*text\.efi: not a PE image"):
        pcr_engine.compute([path])


def test_linux_not_a_pe(tmp_path):
    kernel = images.write(tmp_path / "kernel", b"\x7fELF" + b"\0" * 5000)
    path = images.build_uki(tmp_path, kernel=kernel)
    with pytest.raises(PcrError, match=r"uki\.efi: its \.linux section .* is not a PE32\+ image"):
        pcr_engine.compute([path])


def test_unknown_stub_version(tmp_path):
    path = images.build_uki(tmp_path, remove_sdmagic=True)
    with pytest.raises(PcrError, match=r"uki\.efi: Could not find .sdmagic section of UKI"):
        pcr_engine.compute([path])


@pytest.mark.parametrize("banks,message", [((), "at least one"), (("sha1",), "unsupported hash bank")])
def test_bad_banks(banks, message):
    with pytest.raises(PcrError, match=message):
        pcr_engine.compute([images.STUB], banks=banks)


def test_no_images():
    with pytest.raises(PcrError, match="non-empty list"):
        pcr_engine.compute([])


# -- truncation anywhere ------------------------------------------------------------------------------------

def structure_boundaries(data):
    """Offsets where a header, table or section starts or ends, in the image and in its embedded kernel."""
    pe = PeImage(data)
    e_lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    points = {0, 1, 2, 0x3C, 0x40, e_lfanew, e_lfanew + 4, e_lfanew + 24, e_lfanew + 26, pe.checksum_offset,
              pe.security_entry_offset, pe.size_of_headers}
    for section in pe.sections:
        points.update({section.pointer_to_raw_data, section.pointer_to_raw_data + section.content_size,
                       section.pointer_to_raw_data + section.size_of_raw_data})
    linux = pe.section(".linux")
    if linux is not None:
        base = linux.pointer_to_raw_data
        kernel = bytes(pe.section_content(linux))
        points.update(base + p for p in structure_boundaries(kernel))
    if pe.cert_table_size:
        points.update({pe.cert_table_offset, pe.cert_table_offset + 8})
    return points


def truncation_offsets(data):
    points = structure_boundaries(data)
    points.update(len(data) * i // 200 for i in range(200))
    points.update(p + d for p in list(points) for d in (-1, 1))
    return sorted(p for p in points if 0 <= p < len(data))


def assert_every_truncation_fails(name, data):
    # The files used here end exactly where their last structure does (the COFF string table, or the
    # certificate table of a signed file), so every strictly shorter prefix must be refused.
    view = memoryview(data)
    offsets = truncation_offsets(data)
    assert len(offsets) > 250
    for size in offsets:
        with pytest.raises(PcrError) as info:
            pcr_engine.MeasuredImage(name, view[:size])
        assert name in str(info.value), size
    assert pcr_engine.MeasuredImage(name, view).pe.data.nbytes == len(data)


def test_truncated_vector_uki():
    path = os.path.join(images.vector(), "uki.efi")
    assert_every_truncation_fails(path, read(path))


def test_truncated_signed_uki(tmp_path):
    signer = images.Signer(tmp_path, "db")
    path = signer.sign(images.build_uki(tmp_path))
    data = read(path)
    pe = PeImage(data)
    assert pe.cert_table_offset + pe.cert_table_size == len(data)
    assert_every_truncation_fails(path, data)


# -- corrupted headers: a clean error or a valid result, never another exception ----------------------------

@pytest.fixture(scope="module")
def small_uki(tmp_path_factory):
    path = images.build_uki(tmp_path_factory.mktemp("fuzz"))
    return read(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_headers_fail_cleanly(small_uki, data):
    image = bytearray(small_uki)
    e_lfanew = struct.unpack_from("<I", small_uki, 0x3C)[0]
    size_of_optional_header, = struct.unpack_from("<H", small_uki, e_lfanew + 20)
    sections, = struct.unpack_from("<H", small_uki, e_lfanew + 6)
    section_table_end = e_lfanew + 24 + size_of_optional_header + 40 * sections
    kernel_headers = PeImage(small_uki).section(".linux").pointer_to_raw_data
    regions = st.one_of(st.integers(0, section_table_end - 1),  # the UKI's DOS/PE/optional headers, sections
                        st.integers(kernel_headers, kernel_headers + 1023))  # the embedded kernel's headers
    for _flip in range(data.draw(st.integers(1, 8))):
        offset = data.draw(regions)
        image[offset] = data.draw(st.integers(0, 255))
    size = data.draw(st.sampled_from([len(image), data.draw(st.integers(0, len(image)))]))
    try:
        result = pcr_engine.MeasuredImage("fuzzed.efi", bytes(image[:size]))
    except PcrError as exc:
        assert str(exc).startswith("image fuzzed.efi: ")
    else:
        assert len(result.authenticode["sha384"]) == 48

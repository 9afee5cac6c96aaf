# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the pcr_compute module tests: real UKIs, keys and ESLs, and a stand-in nitro-tpm-pcr-compute.

The real nitro-tpm-pcr-compute (aws/NitroTPM-Tools, AL2023 package aws-nitro-tpm-tools) cannot be built or
installed on these Debian machines. The stand-in is a small script that prints the tool's documented output
({"Measurements": {"HashAlgorithm": "SHA384", "PCR4": ..., "PCR7": ..., "PCR12": ...}}) with values the test
chooses (for agreement: the values real firmware measured, from the test vector), and records its arguments.
"""
import json
import os
import stat
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "unit", "plugins", "module_utils", "_pcr"))

import pcr_test_images  # noqa: E402  (the unit tests' builders of real UKIs, keys and ESLs)


def write_stand_in(path, measurements):
    """Write an executable stand-in for nitro-tpm-pcr-compute that prints ``measurements``."""
    stdout = json.dumps({"Measurements": measurements})
    with open(path, "w") as handle:
        handle.write("#!%s\nimport json, sys\n" % sys.executable)
        handle.write("json.dump(sys.argv[1:], open(%r, 'w'))\n" % (path + ".argv"))
        handle.write("print(%r)\n" % stdout)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def stand_in_tool():
    """write_stand_in(path, measurements) -> path, for tests to make as many stand-ins as they need."""
    return write_stand_in


@pytest.fixture(scope="module")
def vector_uki():
    return os.path.join(pcr_test_images.vector(), "uki.efi")


@pytest.fixture(scope="module")
def firmware_measurements():
    """What OVMF + swtpm measured booting the vector UKI, in the tool's format."""
    measured = pcr_test_images.vector_measured()
    result = {"HashAlgorithm": "SHA384"}
    result.update((k, measured["sha384"][k]) for k in ("PCR4", "PCR7", "PCR12"))
    return result


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Real inputs made here: a small UKI, a signed one with its PK/KEK/db ESLs, and bad files of each kind."""
    directory = tmp_path_factory.mktemp("pcr-inputs")
    images = pcr_test_images
    signer = images.Signer(directory, "db")
    uki = images.build_uki(directory, name="uki.efi")
    with open(uki, "rb") as handle:
        uki_bytes = handle.read()
    with open(images.STUB, "rb") as handle:
        stub = bytearray(handle.read())
    e_lfanew = int.from_bytes(stub[0x3C:0x40], "little")
    stub[e_lfanew + 24:e_lfanew + 26] = (0x10B).to_bytes(2, "little")  # PE32 optional header magic
    return {
        "dir": str(directory),
        "uki": uki,
        "signed_uki": signer.sign(images.build_uki(directory, name="tosign.efi")),
        "pk": images.Signer(directory, "pk").esl(),
        "kek": images.Signer(directory, "kek").esl(),
        "db": signer.esl(),
        "db_der": signer.der,
        "text": images.write(directory / "readme.efi", b"not an EFI image\n" * 64),
        "pe32": images.write(directory / "pe32.efi", bytes(stub)),
        "truncated": images.write(directory / "truncated.efi", uki_bytes[:len(uki_bytes) * 2 // 3]),
        "linux_not_pe": images.build_uki(directory, name="badlinux.efi",
                                         kernel=images.write(directory / "kernel.txt", b"no kernel\n" * 500)),
        "no_stub_version": images.build_uki(directory, name="nomagic.efi", remove_sdmagic=True),
        "bad_esl": images.write(directory / "bad.esl", b"\xa1\x59\xc0\xa5" + b"\0" * 12 + b"\xff\xff\0\0" + b"\0" * 8),
    }

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""UKI analysis of real UKIs (the vector, and ones objcopy assembles here from Debian's systemd stub)."""
import os

import pytest

import pcr_test_images as images
from ansible_collections.attestable.ami.plugins.module_utils._pcr import uki as uki_lib
from ansible_collections.attestable.ami.plugins.module_utils._pcr.authenticode import ImageError, PeImage


def analyse(path):
    with open(path, "rb") as handle:
        return uki_lib.analyse(PeImage(handle.read(), path))


def test_vector_uki_details():
    uki = analyse(os.path.join(images.vector(), "uki.efi"))
    details = uki.details()
    assert details["stub_version"].startswith("252.")  # measured.json: Debian systemd-boot-efi 252.39
    assert details["stub_major"] == 252 and details["stub_version_source"] == ".sdmagic"
    assert details["architecture"] == details["kernel_architecture"] == "x86_64"
    assert details["os_release"]["NAME"] == "Debian GNU/Linux"
    assert details["cmdline"].startswith("console=ttyS0")
    assert details["sections"][-2:] == [".linux", ".initrd"]
    linux = uki.image.section(".linux")
    assert details["kernel_size"] == min(linux.virtual_size, linux.size_of_raw_data)


def test_built_uki_reads_back_what_was_put_in(tmp_path):
    path = images.build_uki(tmp_path, cmdline="root=/dev/vda ro quiet\n")
    uki = analyse(path)
    assert uki.cmdline == "root=/dev/vda ro quiet\n"
    assert uki.os_release["VERSION"] == "12 (bookworm)"
    with open(images.SMALL_PE, "rb") as handle:
        assert bytes(uki.kernel_data) == handle.read()
    assert uki.measures_kernel(secure_boot=False) and not uki.measures_kernel(secure_boot=True)


def test_stub_alone_is_not_a_uki():
    images.need_file(images.STUB)
    assert analyse(images.STUB) is None


def test_al2023_osrel_fallback(tmp_path):
    path = images.build_uki(tmp_path, osrel=images.AL2023_OSREL, remove_sdmagic=True)
    uki = analyse(path)
    assert uki.stub_major == 252 and ".osrel" in uki.stub_version_source
    assert ".sdmagic" not in uki.sections


def test_no_sdmagic_and_not_al2023_is_an_error(tmp_path):
    path = images.build_uki(tmp_path, remove_sdmagic=True)
    with pytest.raises(ImageError, match="Could not find .sdmagic section of UKI"):
        analyse(path)


def test_unreadable_sdmagic_is_an_error(tmp_path):
    path = images.build_uki(tmp_path, sdmagic="#### LoaderInfo: something else ####")
    with pytest.raises(ImageError, match="does not hold '#### LoaderInfo: systemd-stub"):
        analyse(path)


@pytest.mark.parametrize("version,major,standard,secure", [
    ("251.4-1", 251, True, True),
    ("252.39-1~deb12u2", 252, True, False),
    ("257", 257, True, False),
    ("258.1-1", 258, False, False),
    ("262-1", 262, False, False),
])
def test_kernel_measurement_rule(tmp_path, version, major, standard, secure):
    path = images.build_uki(tmp_path, sdmagic="#### LoaderInfo: systemd-stub %s ####" % version)
    uki = analyse(path)
    assert (uki.stub_version, uki.stub_major) == (version, major)
    assert uki.measures_kernel(secure_boot=False) is standard
    assert uki.measures_kernel(secure_boot=True) is secure


def test_linux_section_that_is_not_a_pe(tmp_path):
    kernel = images.write(tmp_path / "not-a-kernel", b"this is no kernel image\n" * 100)
    path = images.build_uki(tmp_path, kernel=kernel)
    with pytest.raises(ImageError, match=r"\.linux section .* is not a PE32\+ image: not a PE image"):
        analyse(path)


def test_parse_os_release():
    text = 'NAME="Amazon Linux"\n# comment\nVERSION=\'2023\'\nID=amzn\nPRETTY="a \\"quoted\\" word"\nbroken line\n'
    assert uki_lib.parse_os_release(text) == {"NAME": "Amazon Linux", "VERSION": "2023", "ID": "amzn",
                                              "PRETTY": 'a "quoted" word'}

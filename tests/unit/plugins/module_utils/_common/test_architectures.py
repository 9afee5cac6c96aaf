# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_common/architectures: the one table of architecture names, and the module_utils that map through it."""
import pytest

from ansible_collections.attestable.ami.plugins.module_utils._aws import ami_registration as reg
from ansible_collections.attestable.ami.plugins.module_utils._boot import esp, measure, qemu
from ansible_collections.attestable.ami.plugins.module_utils._common import architectures as a
from ansible_collections.attestable.ami.plugins.module_utils._pcr import authenticode

ROWS = [  # given, aws, uefi, kiwi, qemu, debian
    ("x86_64", "x86_64", "X64", "x86_64", "x86_64", "amd64"),
    ("arm64", "arm64", "AA64", "aarch64", "aarch64", "arm64"),
    ("aarch64", "arm64", "AA64", "aarch64", "aarch64", "arm64"),
]


@pytest.mark.parametrize("given, aws, uefi, kiwi, qemu_name, debian", ROWS)
def test_each_accepted_spelling_maps_to_each_consumers_name(given, aws, uefi, kiwi, qemu_name, debian):
    assert [a.name_for(given, c) for c in ("aws", "uefi", "kiwi", "uname", "qemu", "debian")] == \
        [aws, uefi, kiwi, kiwi, qemu_name, debian]
    assert a.boot_file(given) == "EFI/BOOT/BOOT%s.EFI" % uefi


@pytest.mark.parametrize("given", ["sparc", "amd64", "AARCH64", "x86-64", "", None, 64])
def test_other_names_are_refused_naming_the_input_and_the_accepted(given):
    with pytest.raises(a.ArchitectureError, match=r"^image_architecture: %s is not supported \(expected one of "
                       r"x86_64, arm64, aarch64\)$" % repr(given).replace("-", r"\-")):
        a.name_for(given, "aws", "image_architecture")


def test_a_machine_may_call_itself_amd64_and_consumers_are_checked():
    assert a.canonical("amd64", machine=True) == "x86_64"
    with pytest.raises(a.ArchitectureError, match=r"consumer 'ppc' is not known \(expected one of aws, debian"):
        a.name_for("x86_64", "ppc")


@pytest.mark.parametrize("given, aws", [(row[0], row[1]) for row in ROWS])
def test_image_registration_takes_every_spelling_and_gives_ec2_its_name(given, aws):
    assert reg.validate_architecture(given) == aws
    assert reg.build_register_request("attestable-1", "snap-0123456789abcdef0", given, {})["Architecture"] == aws
    image = {"Architecture": aws, "Tags": [], "BootMode": "uefi", "TpmSupport": "v2.0"}
    assert not [p for p in reg.image_differences(image, {}, given) if p.startswith("architecture")]


@pytest.mark.parametrize("given, qemu_name", [(row[0], row[4]) for row in ROWS])
def test_measured_boot_takes_every_spelling(given, qemu_name, tmp_path):
    params = {"arch": given, "uki": str(tmp_path / "missing.efi")}
    with pytest.raises(measure.MeasuredBootError, match="uki: .* is not a file"):  # arch was accepted first
        measure.check_inputs(params)
    assert params["arch"] == qemu_name and qemu_name in qemu.ARCHITECTURES


def test_the_boot_code_takes_its_names_from_the_table():
    assert esp.BOOT_LOADERS == {"x86_64": "EFI/BOOT/BOOTX64.EFI", "aarch64": "EFI/BOOT/BOOTAA64.EFI"}
    for given in ("arm64", "aarch64"):
        assert esp.boot_loader_candidates(given)[0] == "EFI/BOOT/BOOTAA64.EFI"
    assert esp.boot_loader_candidates("amd64")[0] == "EFI/BOOT/BOOTX64.EFI"
    assert sorted(esp.boot_loader_candidates("sparc")) == sorted(esp.BOOT_LOADERS.values())
    assert dict((k, v["loader"]) for k, v in qemu.ARCHITECTURES.items()) == esp.BOOT_LOADERS
    assert authenticode.MACHINES[0x8664] == "x86_64" and authenticode.MACHINES[0xAA64] == "aarch64"

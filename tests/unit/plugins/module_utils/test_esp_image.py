"""esp_image: ESP and GPT disk images made with mkfs.vfat/mtools/sgdisk, read back without mounting."""
import os
import shutil
import struct

import pytest

from ansible_collections.attestable.ami.plugins.module_utils import esp_image

TOOLS = ("mkfs.vfat", "mmd", "mcopy", "sgdisk")
needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                 reason="dosfstools, mtools or gdisk not installed")


@needs_tools
def test_esp_inside_a_gpt_disk_round_trips(tmp_path):
    loader = tmp_path / "loader.efi"
    loader.write_bytes(os.urandom(300000))
    esp = esp_image.make_esp(str(tmp_path / "esp.img"), {"EFI/BOOT/BOOTX64.EFI": str(loader)})
    disk = esp_image.make_gpt_disk(str(tmp_path / "disk.img"), esp)
    offset, size = esp_image.find_esp(disk)
    assert offset == 1024 * 1024 and size == os.path.getsize(esp)
    out = esp_image.extract_file(disk, "EFI/BOOT/BOOTX64.EFI", str(tmp_path / "out.efi"), offset)
    assert open(out, "rb").read() == loader.read_bytes()
    out2 = esp_image.extract_file(esp, "EFI/BOOT/BOOTX64.EFI", str(tmp_path / "out2.efi"))
    assert open(out2, "rb").read() == loader.read_bytes()


@needs_tools
def test_missing_file_on_the_esp_is_reported(tmp_path):
    esp = esp_image.make_esp(str(tmp_path / "esp.img"), {"a/b.txt": __file__})
    with pytest.raises(esp_image.EspImageError, match="EFI/BOOT/BOOTX64.EFI: mcopy failed"):
        esp_image.extract_file(esp, "EFI/BOOT/BOOTX64.EFI", str(tmp_path / "x"))
    with pytest.raises(esp_image.EspImageError, match="no such file to put on the ESP"):
        esp_image.make_esp(str(tmp_path / "e2.img"), {"x": str(tmp_path / "missing")})


def test_a_file_without_gpt_is_refused(tmp_path):
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"\0" * 4096)
    with pytest.raises(esp_image.EspImageError, match="plain.img: not a raw GPT disk image"):
        esp_image.find_esp(str(plain))
    with pytest.raises(esp_image.EspImageError, match="cannot read"):
        esp_image.find_esp(str(tmp_path / "missing.img"))


def test_a_gpt_without_esp_is_refused(tmp_path):
    header = b"EFI PART" + b"\0" * 64 + struct.pack("<QII", 2, 4, 128)
    entry = os.urandom(16) + b"\0" * 112  # some other partition type
    image = b"\0" * 512 + header + b"\0" * (512 - len(header)) + entry * 4 + b"\0" * 512
    path = tmp_path / "noesp.img"
    path.write_bytes(image)
    with pytest.raises(esp_image.EspImageError, match="no EFI System partition"):
        esp_image.find_esp(str(path))

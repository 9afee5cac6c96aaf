# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""esp_image: ESP and GPT disk images made with mkfs.vfat/mtools/sgdisk, read back without mounting."""
import os
import shutil
import struct

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._boot import esp as esp_image

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


# --- the Python FAT reader (what kiwi_build uses on the builder, where mtools may be missing) ---------------

def fat_image(tmp_path, fat_bits, size_mib, files):
    """A FAT12/16/32 image made by mkfs.vfat, files copied in with mtools: {inner path: bytes}."""
    image = str(tmp_path / ("fat%d.img" % fat_bits))
    with open(image, "wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    esp_image._run(["mkfs.vfat", "-F", str(fat_bits), image], image)
    made = set()
    for inner, data in sorted(files.items()):
        parts = inner.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                esp_image._run(["mmd", "-i", image, "::/" + directory], image)
                made.add(directory)
        src = tmp_path / ("src-%d" % len(made))
        src.write_bytes(data)
        esp_image._run(["mcopy", "-i", image, str(src), "::/" + inner], image)
    return image


@needs_tools
@pytest.mark.parametrize("fat_bits, size_mib", [(12, 4), (16, 64), (32, 64)])
def test_python_reader_reads_fat12_16_32_with_long_names(tmp_path, fat_bits, size_mib):
    loader = os.urandom(700000 if fat_bits != 12 else 300000)
    files = {"EFI/BOOT/BOOTX64.EFI": loader, "EFI/Linux/attestable-6.1.119-Uki.efi": b"long name\n",
             "loader/loader.conf": b"", "EFI/systemd/systemd-bootx64.efi": os.urandom(5000)}
    image = fat_image(tmp_path, fat_bits, size_mib, files)
    for inner, data in files.items():
        out = str(tmp_path / "out")
        esp_image.read_fat_file(image, inner, out)
        assert open(out, "rb").read() == data, inner
    esp_image.read_fat_file(image, "efi/boot/bootx64.efi", str(tmp_path / "lower"))  # FAT names ignore case
    assert open(str(tmp_path / "lower"), "rb").read() == loader


@needs_tools
def test_python_reader_follows_a_fragmented_chain(tmp_path):
    """Fill the FAT, free every other file, then write a big one: its clusters are scattered."""
    image = fat_image(tmp_path, 16, 64, {"fill/%03d" % i: os.urandom(20000) for i in range(40)})
    for i in range(0, 40, 2):
        esp_image._run(["mdel", "-i", image, "::/fill/%03d" % i], image)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600000))
    esp_image._run(["mcopy", "-i", image, str(big), "::/fill/big.bin"], image)
    esp_image.read_fat_file(image, "fill/big.bin", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == big.read_bytes()
    esp_image.read_fat_file(image, "fill/001", str(tmp_path / "one"))
    assert len((tmp_path / "one").read_bytes()) == 20000


@needs_tools
def test_boot_loader_from_a_gpt_disk_like_uki_to_disk_makes(tmp_path):
    uki = tmp_path / "uki.efi"
    uki.write_bytes(b"MZ" + os.urandom(2 * 1024 * 1024))
    esp = esp_image.make_esp(str(tmp_path / "esp.img"), {"EFI/BOOT/BOOTAA64.EFI": str(uki)})
    disk = esp_image.make_gpt_disk(str(tmp_path / "disk.raw"), esp)
    dest = str(tmp_path / "found.efi")
    assert esp_image.copy_boot_loader(disk, dest, "x86_64") == "EFI/BOOT/BOOTAA64.EFI"  # falls back to the other
    assert open(dest, "rb").read() == uki.read_bytes()
    assert esp_image.copy_boot_loader(disk, dest, "arm64") == "EFI/BOOT/BOOTAA64.EFI"


@needs_tools
def test_esp_without_a_boot_loader_names_what_was_tried(tmp_path):
    esp = esp_image.make_esp(str(tmp_path / "esp.img"), {"EFI/Linux/x.efi": __file__})
    disk = esp_image.make_gpt_disk(str(tmp_path / "disk.raw"), esp)
    with pytest.raises(esp_image.EspImageError) as info:
        esp_image.copy_boot_loader(disk, str(tmp_path / "x.efi"))
    assert "EFI/BOOT/BOOTX64.EFI" in str(info.value) and "EFI/BOOT/BOOTAA64.EFI" in str(info.value)
    assert "disk.raw" in str(info.value) and not os.path.exists(str(tmp_path / "x.efi"))


def test_python_reader_refuses_what_is_not_fat(tmp_path):
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"\0" * 8192)
    with pytest.raises(esp_image.EspImageError, match="no FAT boot sector"):
        esp_image.read_fat_file(str(plain), "EFI/BOOT/BOOTX64.EFI", str(tmp_path / "x"))


@needs_tools
def test_a_failed_build_or_copy_leaves_the_destination_as_it_was(tmp_path):
    uki = tmp_path / "uki.efi"
    uki.write_bytes(b"MZ" + os.urandom(4096))
    esp = str(tmp_path / "esp.img")
    esp_image.make_esp(esp, {"EFI/BOOT/BOOTX64.EFI": str(uki)})
    before = open(esp, "rb").read()
    with pytest.raises(esp_image.EspImageError, match=r"(mmd|mcopy) failed \(rc="):
        # an image too small for FAT32 makes mtools fail after mkfs.vfat wrote the (temporary) image
        big = tmp_path / "big.bin"
        big.write_bytes(b"\0" * (2 * 1024 * 1024))
        esp_image.make_esp(esp, {"EFI/BOOT/BOOTX64.EFI": str(big)}, size=1024 * 1024)
    assert open(esp, "rb").read() == before, "the earlier image is untouched"
    found = tmp_path / "found.efi"
    found.write_bytes(b"earlier")
    with pytest.raises(esp_image.EspImageError):
        esp_image.extract_file(esp, "EFI/BOOT/MISSING.EFI", str(found))
    with pytest.raises(esp_image.EspImageError):
        esp_image.read_fat_file(esp, "EFI/BOOT/MISSING.EFI", str(found))
    assert found.read_bytes() == b"earlier"
    assert sorted(os.listdir(str(tmp_path))) == ["big.bin", "esp.img", "found.efi", "uki.efi"], \
        "no temporary file is left"
    esp_image.extract_file(esp, "EFI/BOOT/BOOTX64.EFI", str(found))
    assert found.read_bytes() == uki.read_bytes()


def test_a_missing_tool_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(esp_image.EspImageError, match="cannot run mkfs.vfat .*install dosfstools, mtools and gdisk"):
        esp_image.make_esp(str(tmp_path / "esp.img"), {"EFI/BOOT/BOOTX64.EFI": __file__})
    assert os.listdir(str(tmp_path)) == []

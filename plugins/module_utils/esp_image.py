"""EFI System Partition images and GPT disk images, built and read without mounting anything.

Plain Python (3.9+), no Ansible imports. Runs mkfs.vfat (dosfstools), mmd/mcopy (mtools) and sgdisk (gdisk);
the kernel's vfat driver is never needed (it is missing on the build machines).

    make_esp(path, files)             FAT32 image holding files ({"EFI/BOOT/BOOTX64.EFI": source path})
    make_gpt_disk(path, esp_path)     raw GPT disk with one EFI System partition holding that ESP image
    find_esp(disk_path)               (byte offset, byte size) of a raw GPT disk's EFI System partition
    extract_file(image, inner, dest)  copy a file out of an ESP image (or a GPT disk's ESP) with mcopy
"""

import os
import struct
import subprocess
import uuid

SECTOR = 512
MIB = 1024 * 1024
ESP_TYPE_GUID = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
# Fixed volume and GUID identifiers: images differ only in the file times mtools records.
_VOLUME_ID = "0ea7e5ab"
_DISK_GUID = "6f6d0e1c-8a53-4b8e-9c2b-3d7a0f8e5a11"
_PARTITION_GUID = "2d1e6a44-0b9f-4c61-8f3a-6a2b9c1d7e05"


class EspImageError(Exception):
    """An image could not be made or read; the message names the file and the problem."""


def _run(argv, what):
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              check=False)
    except OSError as exc:
        raise EspImageError("%s: cannot run %s (%s); install dosfstools, mtools and gdisk" % (what, argv[0], exc))
    if proc.returncode != 0:
        raise EspImageError("%s: %s failed (rc=%d): %s" % (
            what, argv[0], proc.returncode, proc.stderr.decode("utf-8", "replace").strip()))
    return proc


def esp_size(files):
    """Bytes for an ESP holding these files: FAT32 needs >= 33 MiB; leave room for FAT overhead."""
    payload = sum(os.path.getsize(src) for src in files.values())
    size = max(64 * MIB, int(payload * 1.1) + 16 * MIB)
    return (size + MIB - 1) // MIB * MIB


def make_esp(path, files, size=None):
    """Write a FAT32 ESP image at path holding files (inner path -> source path); returns path."""
    for src in files.values():
        if not os.path.isfile(src):
            raise EspImageError("%s: no such file to put on the ESP" % src)
    size = size or esp_size(files)
    with open(path, "wb") as image:
        image.truncate(size)
    _run(["mkfs.vfat", "-F", "32", "-n", "ESP", "-i", _VOLUME_ID, "--invariant", path], path)
    made = set()
    for inner in sorted(files):
        parts = inner.strip("/").split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                _run(["mmd", "-i", path, "::/" + directory], path)
                made.add(directory)
        _run(["mcopy", "-i", path, files[inner], "::/" + "/".join(parts)], path)
    return path


def make_gpt_disk(path, esp_path):
    """Write a raw GPT disk at path: 1 MiB, the ESP image as partition 1 (type EF00), 1 MiB; returns path."""
    esp_bytes = os.path.getsize(esp_path)
    esp_sectors = (esp_bytes + SECTOR - 1) // SECTOR
    start = MIB // SECTOR
    total = start + esp_sectors + start
    with open(path, "wb") as disk:
        disk.truncate(total * SECTOR)
    _run(["sgdisk", "--clear", "--disk-guid=" + _DISK_GUID,
          "--new=1:%d:%d" % (start, start + esp_sectors - 1), "--typecode=1:ef00", "--change-name=1:ESP",
          "--partition-guid=1:" + _PARTITION_GUID, path], path)
    with open(esp_path, "rb") as src, open(path, "r+b") as disk:
        disk.seek(start * SECTOR)
        while True:
            chunk = src.read(4 * MIB)
            if not chunk:
                break
            disk.write(chunk)
    return path


def find_esp(disk_path):
    """(offset, size) in bytes of the first EFI System partition of a raw GPT disk image."""
    try:
        with open(disk_path, "rb") as disk:
            header = disk.read(2 * SECTOR)[SECTOR:]
            if len(header) < 92 or header[:8] != b"EFI PART":
                raise EspImageError("%s: not a raw GPT disk image (no 'EFI PART' header at LBA 1)" % disk_path)
            entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
            if entry_size < 128 or count > 1024:
                raise EspImageError("%s: GPT header has an implausible partition table" % disk_path)
            disk.seek(entries_lba * SECTOR)
            table = disk.read(count * entry_size)
    except (IOError, OSError) as exc:
        raise EspImageError("%s: cannot read (%s)" % (disk_path, exc))
    for index in range(len(table) // entry_size):
        entry = table[index * entry_size:(index + 1) * entry_size]
        if uuid.UUID(bytes_le=entry[:16]) == ESP_TYPE_GUID:
            first, last = struct.unpack_from("<QQ", entry, 32)
            return first * SECTOR, (last - first + 1) * SECTOR
    raise EspImageError("%s: the GPT has no EFI System partition (type %s)" % (disk_path, ESP_TYPE_GUID))


def extract_file(image_path, inner, dest, offset=0):
    """Copy ::/inner out of a FAT image (at a byte offset, for a partition inside a disk) to dest."""
    target = image_path if not offset else "%s@@%d" % (image_path, offset)
    _run(["mcopy", "-n", "-i", target, "::/" + inner.strip("/"), dest], "%s:%s" % (image_path, inner))
    return dest

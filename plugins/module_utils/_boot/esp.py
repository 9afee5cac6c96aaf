# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""EFI System Partition images and GPT disk images, built and read without mounting anything.

Plain Python (3.9+), no Ansible imports. Runs mkfs.vfat (dosfstools), mmd/mcopy (mtools) and sgdisk (gdisk)
through processes.run; the kernel's vfat driver is never needed (it is missing on the build machines). Every
file is written through atomic_file: built or copied beside its destination, renamed into place only when
complete, so a failure leaves no half-made image.

    make_esp(path, files)             FAT32 image holding files ({"EFI/BOOT/BOOTX64.EFI": source path})
    make_gpt_disk(path, esp_path)     raw GPT disk with one EFI System partition holding that ESP image
    find_esp(disk_path)               (byte offset, byte size) of a raw GPT disk's EFI System partition
    extract_file(image, inner, dest)  copy a file out of an ESP image (or a GPT disk's ESP) with mcopy
    read_fat_file(image, inner, dest, offset)  the same in plain Python (FAT12/16/32, long names): no mtools
    copy_boot_loader(disk, dest)      the ESP's EFI/BOOT/BOOT<arch>.EFI of a raw GPT disk, in plain Python
"""

import os
import platform
import struct
import uuid

from ansible_collections.attestable.ami.plugins.module_utils._common import architectures, atomic_file, processes

SECTOR = 512
MIB = 1024 * 1024
ESP_TYPE_GUID = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
# Fixed volume and GUID identifiers: images differ only in the file times mtools records.
_VOLUME_ID = "0ea7e5ab"
_DISK_GUID = "6f6d0e1c-8a53-4b8e-9c2b-3d7a0f8e5a11"
_PARTITION_GUID = "2d1e6a44-0b9f-4c61-8f3a-6a2b9c1d7e05"


class EspImageError(Exception):
    """An image could not be made or read; the message names the file and the problem."""


# seconds one mkfs.vfat, mmd, mcopy or sgdisk call may take (they take well under a second per file)
TOOL_TIMEOUT = 600


def _run(argv, what):
    try:
        proc = processes.run(argv, timeout=TOOL_TIMEOUT)
    except processes.ProcessNotStarted as exc:
        raise EspImageError("%s: cannot run %s (%s); install dosfstools, mtools and gdisk"
                            % (what, argv[0], exc.os_error))
    except processes.ProcessTimeout as exc:
        raise EspImageError("%s: %s" % (what, exc))
    if proc.returncode != 0:
        raise EspImageError("%s: %s failed (rc=%d): %s" % (
            what, argv[0], proc.returncode, processes.output_tail(proc.stderr)))
    return proc


def _unsafe(exc):
    return EspImageError(str(exc))


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
    try:
        with atomic_file.replacing(path) as tmp:
            with open(tmp, "r+b") as image:
                image.truncate(size)
            _run(["mkfs.vfat", "-F", "32", "-n", "ESP", "-i", _VOLUME_ID, "--invariant", tmp], path)
            made = set()
            for inner in sorted(files):
                parts = inner.strip("/").split("/")
                for depth in range(1, len(parts)):
                    directory = "/".join(parts[:depth])
                    if directory not in made:
                        _run(["mmd", "-i", tmp, "::/" + directory], path)
                        made.add(directory)
                _run(["mcopy", "-i", tmp, files[inner], "::/" + "/".join(parts)], path)
    except atomic_file.UnsafeFileError as exc:
        raise _unsafe(exc)
    return path


def make_gpt_disk(path, esp_path):
    """Write a raw GPT disk at path: 1 MiB, the ESP image as partition 1 (type EF00), 1 MiB; returns path."""
    esp_bytes = os.path.getsize(esp_path)
    esp_sectors = (esp_bytes + SECTOR - 1) // SECTOR
    start = MIB // SECTOR
    total = start + esp_sectors + start
    try:
        with atomic_file.replacing(path) as tmp:
            with open(tmp, "r+b") as disk:
                disk.truncate(total * SECTOR)
            _run(["sgdisk", "--clear", "--disk-guid=" + _DISK_GUID,
                  "--new=1:%d:%d" % (start, start + esp_sectors - 1), "--typecode=1:ef00", "--change-name=1:ESP",
                  "--partition-guid=1:" + _PARTITION_GUID, tmp], path)
            with open(esp_path, "rb") as src, open(tmp, "r+b") as disk:
                disk.seek(start * SECTOR)
                while True:
                    chunk = src.read(4 * MIB)
                    if not chunk:
                        break
                    disk.write(chunk)
    except atomic_file.UnsafeFileError as exc:
        raise _unsafe(exc)
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
    try:
        with atomic_file.replacing(dest) as tmp:
            _run(["mcopy", "-n", "-i", target, "::/" + inner.strip("/"), tmp], "%s:%s" % (image_path, inner))
    except atomic_file.UnsafeFileError as exc:
        raise _unsafe(exc)
    return dest


# The removable-media boot loader paths firmware looks for, by machine architecture (UEFI spec 3.5.1.1).
BOOT_LOADERS = architectures.boot_files()  # {"x86_64": "EFI/BOOT/BOOTX64.EFI", "aarch64": "EFI/BOOT/BOOTAA64.EFI"}
_CHUNK = 4 * MIB


class _Fat(object):
    """A read-only view of a FAT12/16/32 file system at a byte offset of a file (no mount, no mtools)."""

    def __init__(self, handle, offset, where):
        self.handle, self.offset, self.where = handle, offset, where
        boot = self._read(0, 512)
        if len(boot) < 512 or boot[510:512] != b"\x55\xaa":
            raise EspImageError("%s: no FAT boot sector (missing 55AA signature)" % where)
        (self.sector, self.per_cluster, reserved, fats, root_entries, total16, _media, fat16,
         ) = struct.unpack_from("<HBHBHHBH", boot, 11)
        total32, = struct.unpack_from("<I", boot, 32)
        fat32_size, = struct.unpack_from("<I", boot, 36)
        if self.sector not in (512, 1024, 2048, 4096) or self.per_cluster == 0 or fats == 0:
            raise EspImageError("%s: not a FAT file system (implausible BIOS parameter block)" % where)
        fat_size = fat16 or fat32_size
        total = total16 or total32
        root_sectors = (root_entries * 32 + self.sector - 1) // self.sector
        self.fat_start = reserved * self.sector
        self.root_start = (reserved + fats * fat_size) * self.sector
        self.root_bytes = root_sectors * self.sector
        self.data_start = self.root_start + self.root_bytes
        self.cluster_bytes = self.sector * self.per_cluster
        self.clusters = (total - reserved - fats * fat_size - root_sectors) // self.per_cluster
        if self.clusters < 4085:
            self.bits = 12
        elif self.clusters < 65525:
            self.bits = 16
        else:
            self.bits = 32
            self.root_cluster, = struct.unpack_from("<I", boot, 44)

    def _read(self, position, size):
        self.handle.seek(self.offset + position)
        return self.handle.read(size)

    def _next(self, cluster):
        if self.bits == 12:
            raw, = struct.unpack("<H", self._read(self.fat_start + cluster + cluster // 2, 2))
            value = raw >> 4 if cluster & 1 else raw & 0xFFF
            return None if value >= 0xFF8 else value
        if self.bits == 16:
            value, = struct.unpack("<H", self._read(self.fat_start + cluster * 2, 2))
            return None if value >= 0xFFF8 else value
        value, = struct.unpack("<I", self._read(self.fat_start + cluster * 4, 4))
        value &= 0x0FFFFFFF
        return None if value >= 0x0FFFFFF8 else value

    def chain(self, first):
        """The clusters of a chain, refusing loops and clusters outside the file system."""
        cluster, seen = first, 0
        while cluster is not None:
            if cluster < 2 or cluster >= self.clusters + 2 or seen > self.clusters:
                raise EspImageError("%s: broken FAT cluster chain (cluster %d)" % (self.where, cluster))
            yield cluster
            seen += 1
            cluster = self._next(cluster)

    def _cluster_data(self, cluster):
        return self._read(self.data_start + (cluster - 2) * self.cluster_bytes, self.cluster_bytes)

    def _directory_bytes(self, first_cluster):
        if first_cluster is None:  # FAT12/16 root directory: a fixed area
            return self._read(self.root_start, self.root_bytes)
        return b"".join(self._cluster_data(c) for c in self.chain(first_cluster))

    def entries(self, first_cluster):
        """(long or short name, is_directory, first cluster, size) of a directory's entries."""
        data = self._directory_bytes(first_cluster)
        long_parts = {}
        for index in range(0, len(data) - 31, 32):
            entry = data[index:index + 32]
            if entry[0] == 0:
                break
            if entry[0] == 0xE5:
                long_parts = {}
                continue
            attributes = entry[11]
            if attributes == 0x0F:
                chars = entry[1:11] + entry[14:26] + entry[28:32]
                long_parts[entry[0] & 0x1F] = chars.decode("utf-16-le", "replace")
                continue
            if attributes & 0x08:  # volume label
                long_parts = {}
                continue
            short = entry[0:8].decode("ascii", "replace").rstrip()
            extension = entry[8:11].decode("ascii", "replace").rstrip()
            name = short + ("." + extension if extension else "")
            if long_parts:
                joined = "".join(long_parts[k] for k in sorted(long_parts))
                name = joined.split("\x00", 1)[0].rstrip("\uffff")
            long_parts = {}
            high, = struct.unpack_from("<H", entry, 20)
            low, size = struct.unpack_from("<HI", entry, 26)
            yield name, bool(attributes & 0x10), (high << 16 | low) if self.bits == 32 else low, size

    def find(self, inner):
        """(first cluster, size) of a file by its path (case-insensitive, as FAT names are)."""
        parts = [part for part in inner.strip("/").split("/") if part]
        directory = self.root_cluster if self.bits == 32 else None
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            for name, is_dir, first, size in self.entries(directory):
                if name.upper() == part.upper() and is_dir != last:
                    if last:
                        return first, size
                    directory = first
                    break
            else:
                raise EspImageError("%s: no %s on the FAT file system" % (self.where, "/".join(parts[:depth + 1])))
        raise EspImageError("%s: %r is not a file path" % (self.where, inner))

    def copy(self, inner, dest):
        """Write the file to dest (through atomic_file: dest changes only when the whole file was read)."""
        first, size = self.find(inner)
        left = size
        with atomic_file.replacing(dest) as tmp:
            with open(tmp, "wb") as out:
                if size:
                    for cluster in self.chain(first):
                        chunk = self._cluster_data(cluster)[:left]
                        out.write(chunk)
                        left -= len(chunk)
                        if left <= 0:
                            break
            if left > 0:
                raise EspImageError("%s: %s is cut short (%d of %d bytes)" % (self.where, inner, size - left, size))
        return size


def read_fat_file(image_path, inner, dest, offset=0):
    """Copy ::/inner out of a FAT image (at a byte offset, for a partition inside a disk) to dest, in Python."""
    where = "%s (FAT at byte %d)" % (image_path, offset) if offset else image_path
    try:
        with open(image_path, "rb") as handle:
            _Fat(handle, offset, where).copy(inner, dest)
    except atomic_file.UnsafeFileError as exc:
        raise _unsafe(exc)
    except (IOError, OSError) as exc:
        raise EspImageError("%s: cannot read %s: %s" % (where, inner, exc))
    except struct.error as exc:
        raise EspImageError("%s: truncated FAT file system (%s)" % (where, exc))
    return dest


def boot_loader_candidates(architecture=None):
    """The EFI/BOOT/BOOT<arch>.EFI paths to try, the given (or this machine's) architecture first."""
    try:
        first = [architectures.boot_file((architecture or platform.machine() or "").lower(), machine=True)]
    except architectures.ArchitectureError:
        first = []
    return first + [path for path in sorted(BOOT_LOADERS.values()) if path not in first]


def copy_boot_loader(disk_path, dest, architecture=None):
    """Copy the removable-media boot loader (the UKI of an attestable image) out of a raw GPT disk's ESP.

    Returns the ESP path that was found, e.g. "EFI/BOOT/BOOTX64.EFI". Raises EspImageError naming the disk and
    the paths tried when the ESP holds none of them.
    """
    offset, _size = find_esp(disk_path)
    missing = []
    for inner in boot_loader_candidates(architecture):
        try:
            read_fat_file(disk_path, inner, dest, offset)
            return inner
        except EspImageError as exc:  # dest was not touched (atomic_file)
            if "on the FAT file system" not in str(exc):
                raise
            missing.append(inner)
    raise EspImageError("%s: its EFI System partition holds none of %s" % (disk_path, ", ".join(missing)))

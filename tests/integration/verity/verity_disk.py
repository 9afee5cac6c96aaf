# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build what KIWI builds for a verity root, with the same tools: an erofs image, `veritysetup format` writing
the hash tree into the same file after the filesystem (--hash-offset = the filesystem's size), placed as a GPT
partition of a raw disk beside an EFI System partition, and a UKI whose (zstd) initrd holds the matching
/etc/veritytab line KIWI writes. Shared by the verity tests and, for the tampered boot, by measured_boot's.
"""
import os
import re
import subprocess

MIB = 1024 * 1024
FS_UUID = "6b0e5e36-6f0e-4c8d-9a51-0c8f2a4d9e11"
ROOT_LABEL = "p.lxroot"
STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"


def run(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def make_verity_filesystem(path, tree):
    """erofs of tree at path with its hash tree appended; returns dict(root_hash, hash_offset, size, uuid)."""
    run(["mkfs.erofs", "-T0", "--all-root", "-U", FS_UUID, "-zlz4hc", path, tree])
    hash_offset = os.path.getsize(path)
    out = run(["veritysetup", "format", path, path, "--hash-offset=%d" % hash_offset,
               "--hash-block-size=4096"]).stdout
    root_hash = re.search(r"Root hash:\s+([0-9a-f]+)", out).group(1)
    return {"root_hash": root_hash, "hash_offset": hash_offset, "size": os.path.getsize(path), "uuid": FS_UUID}


def make_disk(path, filesystem, esp=None):
    """Raw GPT disk: partition 1 = EFI System (esp image or 2 MiB of zeros), partition 2 = filesystem (p.lxroot)."""
    esp_size = os.path.getsize(esp) if esp else 2 * MIB
    esp_mib = (esp_size + MIB - 1) // MIB
    fs_mib = (os.path.getsize(filesystem) + MIB - 1) // MIB + 1  # KIWI's partitions have room to spare
    with open(path, "wb") as handle:
        handle.truncate((1 + esp_mib + fs_mib + 1) * MIB)
    run(["sgdisk", "--new=1:2048:+%dM" % esp_mib, "--typecode=1:ef00", "--change-name=1:p.UEFI",
         "--new=2:0:+%dM" % fs_mib, "--typecode=2:8300", "--change-name=2:%s" % ROOT_LABEL, path])
    for number, image in ((1, esp), (2, filesystem)):
        if image:
            offset = _partition_offset(path, number)
            run(["dd", "if=%s" % image, "of=%s" % path, "bs=1M", "seek=%d" % (offset // MIB), "conv=notrunc"])
    return path


def _partition_offset(disk, number):
    info = run(["sgdisk", "-i", str(number), disk]).stdout
    return int(re.search(r"First sector: (\d+)", info).group(1)) * 512


def root_partition_offset(disk):
    return _partition_offset(disk, 2)


def veritytab_line(verity):
    """What KIWI 11 writes into the initrd's /etc/veritytab (kiwi/builder/disk.py)."""
    return "verityroot UUID={0} UUID={0} {1} hash-offset={2},hash-block-size=4096\n".format(
        verity["uuid"], verity["root_hash"], verity["hash_offset"])


def make_uki_with_veritytab(path, veritytab, workdir):
    """A PE image (systemd stub) whose .initrd is an early cpio + a zstd cpio holding etc/veritytab, as dracut."""
    tree = os.path.join(workdir, "initrd-tree")
    os.makedirs(os.path.join(tree, "etc"))
    with open(os.path.join(tree, "etc", "veritytab"), "w") as handle:
        handle.write(veritytab)
    with open(os.path.join(tree, "init"), "w") as handle:
        handle.write("#!/bin/sh\n")
    names = run(["find", "."], cwd=tree).stdout
    main = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=tree, input=names.encode(),
                          capture_output=True, check=True).stdout
    zstd = subprocess.run(["zstd", "-q", "-c"], input=main, capture_output=True, check=True).stdout
    early_tree = os.path.join(workdir, "early-tree")
    os.makedirs(early_tree)
    with open(os.path.join(early_tree, "early_cpio"), "w") as handle:
        handle.write("1\n")
    early = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=early_tree, input=b"early_cpio\n",
                           capture_output=True, check=True).stdout
    initrd = os.path.join(workdir, "initrd.img")
    with open(initrd, "wb") as handle:
        handle.write(early + b"\0" * (-len(early) % 512) + zstd)
    run(["objcopy", "--add-section", ".initrd=%s" % initrd, "--change-section-vma", ".initrd=0x3000000", STUB, path])
    return path


def flip_byte(path, offset):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))

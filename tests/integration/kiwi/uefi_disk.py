# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read what a KIWI UEFI build produced, without mounting anything: the partitions of a GPT disk (sfdisk, blkid),
files on its EFI system partition (mtools) and the sections of a UKI (objcopy), and files inside an initrd (the
cpio archives dracut concatenates, each maybe compressed)."""
import gzip
import json
import lzma
import os
import shutil
import subprocess

ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MTOOLS = dict(os.environ, MTOOLS_SKIP_CHECK="1")


def partitions(disk):
    """[{number, offset, size, type (GPT type GUID), fstype (blkid)}] in bytes."""
    table = json.loads(subprocess.run(["sfdisk", "-J", disk], capture_output=True, text=True, check=True).stdout)
    sector = table["partitiontable"].get("sectorsize", 512)
    found = []
    for index, part in enumerate(table["partitiontable"]["partitions"], 1):
        offset = part["start"] * sector
        fstype = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", "-O", str(offset), disk],
                                capture_output=True, text=True, check=False).stdout.strip()
        found.append({"number": index, "offset": offset, "size": part["size"] * sector,
                      "type": part["type"].upper(), "fstype": fstype})
    return found


def esp_of(disk):
    esps = [p for p in partitions(disk) if p["type"] == ESP_TYPE]
    assert len(esps) == 1, partitions(disk)
    return esps[0]


def esp_files(disk):
    """Every path on the disk's ESP ('EFI/BOOT/BOOTX64.EFI', directories end with '/')."""
    spec = "%s@@%d" % (disk, esp_of(disk)["offset"])
    out = subprocess.run(["mdir", "-/", "-b", "-i", spec, "::/"], capture_output=True, text=True, env=MTOOLS, check=True)
    return sorted(line.strip()[len("::/"):] for line in out.stdout.splitlines() if line.strip())


def esp_read(disk, path):
    spec = "%s@@%d" % (disk, esp_of(disk)["offset"])
    return subprocess.run(["mtype", "-i", spec, "::/" + path], capture_output=True, env=MTOOLS, check=True).stdout


def extract_partition(disk, part, dest):
    subprocess.run(["dd", "if=" + disk, "of=" + dest, "bs=1M", "iflag=skip_bytes,count_bytes",
                    "skip=%d" % part["offset"], "count=%d" % part["size"], "status=none"], check=True)
    return dest


def uki_section(uki, name, workdir):
    out = os.path.join(str(workdir), "section" + name)
    subprocess.run(["objcopy", "-O", "binary", "--only-section=" + name, uki, out], check=True)
    with open(out, "rb") as handle:
        data = handle.read()
    os.remove(out)
    return data


def _decompress(data):
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd" and shutil.which("zstd"):
        return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True, check=True).stdout
    raise ValueError("initrd part with unknown compression (starts %r)" % data[:8])


def cpio_files(data):
    """{path: bytes} of every regular file in an initrd: uncompressed newc archives (early microcode) followed by
    one compressed archive, as dracut writes it."""
    files, pos = {}, 0
    while pos < len(data):
        if data[pos:pos + 6] in (b"070701", b"070702"):
            pos = _read_newc(data, pos, files)
        elif data[pos:pos + 1] == b"\x00":
            pos += 1
        else:
            files.update(cpio_files(_decompress(data[pos:])))
            break
    return files


def _read_newc(data, pos, files):
    while True:
        header = data[pos:pos + 110]
        mode = int(header[14:22], 16)
        size = int(header[54:62], 16)
        name_size = int(header[94:102], 16)
        name = data[pos + 110:pos + 110 + name_size - 1].decode()
        pos = (pos + 110 + name_size + 3) & ~3
        body = data[pos:pos + size]
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            return pos
        if mode & 0o170000 == 0o100000:
            files[name.lstrip("./")] = body

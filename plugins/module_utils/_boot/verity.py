# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check a dm-verity protected partition in userspace: `veritysetup verify`, no device-mapper needed.

Plain Python (3.9+), no Ansible imports. Runs veritysetup (cryptsetup-bin), losetup (util-linux, when root) and,
for zstd/lz4 initrds, the zstd/lz4 tools, through processes.run.

    parse_veritytab(text)           veritytab entries (KIWI's: "verityroot DATA HASH ROOTHASH hash-offset=N,...")
    initrd_files(data, wanted)      files out of an initrd (concatenated cpio archives, each maybe compressed)
    veritytab_from_uki(path)        the text of /etc/veritytab in a UKI's .initrd section
    gpt_partitions(disk)            the partitions of a raw GPT disk image (number, offset, size, type, label)
    partition_access(...)           a read-only path to a partition: a loop device (root) or a temporary copy
    verify(data, hash, root, ...)   run veritysetup verify; with the superblock's parameters and, on failure, the
                                    root hash the data actually has
"""

import bz2
import contextlib
import lzma
import os
import re
import shutil
import struct
import tempfile
import uuid
import zlib

from ansible_collections.attestable.ami.plugins.module_utils._common import atomic_file, processes
from ansible_collections.attestable.ami.plugins.module_utils._pcr.authenticode import ImageError, PeImage

SECTOR = 512
_HEX = re.compile(r"^[0-9a-fA-F]+$")
VERITYTAB_PATH = "etc/veritytab"
# veritytab options (systemd's veritytab(5) names, as KIWI writes them) -> veritysetup options
_VALUE_OPTIONS = {
    "hash-offset": "--hash-offset",
    "hash-block-size": "--hash-block-size",
    "data-block-size": "--data-block-size",
    "data-blocks": "--data-blocks",
    "hash": "--hash",
    "salt": "--salt",
    "format": "--format",
    "fec-device": None,  # forward error correction only repairs; verify checks without it
}
_INT_OPTIONS = ("hash-offset", "hash-block-size", "data-block-size", "data-blocks", "format")


class VerityError(Exception):
    """Bad input or a tool failure; the message names the input and what was expected."""


# ---------------------------------------------------------------- veritytab

def _parse_options(text, lineno):
    options = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if key in _INT_OPTIONS:
            if not sep or not value.isdigit():
                raise VerityError("veritytab line %d: option %s needs a number, got %r" % (lineno, key, item))
            value = int(value)
        elif not sep:
            value = True
        options[key] = value
    return options


def parse_veritytab(text):
    """The entries of a veritytab: [{name, data_device, hash_device, root_hash, options, line}], in order.

    Format (veritytab(5), what KIWI writes into the initrd):
    ``NAME DATA-DEVICE HASH-DEVICE ROOT-HASH [OPTIONS]``, options comma-separated (``hash-offset=N``,
    ``hash-block-size=N``, ``data-block-size=N``, ``data-blocks=N``, ``hash=ALG``, ``salt=HEX``, ``superblock=false``,
    ``format=N``, ``panic-on-corruption``, ...). Blank lines and ``#`` comments are skipped.
    """
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if len(fields) < 4:
            raise VerityError("veritytab line %d: %r has %d fields; expected 'NAME DATA-DEVICE HASH-DEVICE ROOT-HASH "
                              "[OPTIONS]'" % (lineno, stripped, len(fields)))
        root_hash = fields[3]
        if not _HEX.match(root_hash) or len(root_hash) % 2:
            raise VerityError("veritytab line %d: root hash %r is not hexadecimal" % (lineno, root_hash))
        entries.append({
            "name": fields[0],
            "data_device": fields[1],
            "hash_device": fields[2],
            "root_hash": root_hash.lower(),
            "options": _parse_options(",".join(fields[4:]), lineno),
            "line": stripped,
        })
    if not entries:
        raise VerityError("veritytab: no entry found (expected a line 'NAME DATA-DEVICE HASH-DEVICE ROOT-HASH "
                          "[OPTIONS]')")
    return entries


def select_entry(entries, name=None):
    """The entry called ``name``, or the only one."""
    if name is not None:
        for entry in entries:
            if entry["name"] == name:
                return entry
        raise VerityError("veritytab_name: no entry named %r (the veritytab has %s)"
                          % (name, ", ".join(e["name"] for e in entries)))
    if len(entries) > 1:
        raise VerityError("veritytab: %d entries (%s); give veritytab_name to choose one"
                          % (len(entries), ", ".join(e["name"] for e in entries)))
    return entries[0]


# ---------------------------------------------------------------- initrd (cpio, compressed or not)

_CPIO_MAGICS = (b"070701", b"070702")
_NEWC_HEADER = 110


def _align4(value):
    return (value + 3) & ~3


def _read_cpio(data, pos, wanted, found):
    """Read one newc cpio archive starting at pos (up to its TRAILER!!!); returns the position after it."""
    while True:
        header = bytes(data[pos:pos + _NEWC_HEADER])
        if len(header) < _NEWC_HEADER or header[:6] not in _CPIO_MAGICS:
            raise VerityError("initrd: broken cpio header at offset %d" % pos)
        try:
            fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise VerityError("initrd: broken cpio header at offset %d" % pos)
        mode, filesize, namesize = fields[1], fields[6], fields[11]
        name_start = pos + _NEWC_HEADER
        name = bytes(data[name_start:name_start + namesize - 1]).decode("utf-8", "replace")
        data_start = _align4(name_start + namesize)
        data_end = data_start + filesize
        if data_end > len(data):
            raise VerityError("initrd: cpio member %r runs past the end of the archive" % name)
        pos = _align4(data_end)
        if name == "TRAILER!!!":
            return pos
        normal = name
        while normal.startswith("./"):
            normal = normal[2:]
        normal = normal.lstrip("/")
        if normal in wanted and (mode & 0o170000) in (0o100000, 0o120000) and filesize:
            found[normal] = bytes(data[data_start:data_end])  # a later archive's copy replaces an earlier one


def _decompress(data, pos):
    """(decompressed bytes, position after the compressed stream) for the stream starting at pos."""
    head = bytes(data[pos:pos + 6])
    rest = bytes(data[pos:])
    if head[:2] == b"\x1f\x8b":
        decoder = zlib.decompressobj(wbits=31)
        out = decoder.decompress(rest)
        return out, len(data) - len(decoder.unused_data)
    if head[:6] == b"\xfd7zXZ\x00" or head[:3] == b"\x5d\x00\x00":
        decoder = lzma.LZMADecompressor(lzma.FORMAT_AUTO)
        out = decoder.decompress(rest)
        return out, len(data) - len(decoder.unused_data)
    if head[:3] == b"BZh":
        decoder = bz2.BZ2Decompressor()
        out = decoder.decompress(rest)
        return out, len(data) - len(decoder.unused_data)
    for magic, tool in ((b"\x28\xb5\x2f\xfd", "zstd"), (b"\x02\x21\x4c\x18", "lz4"), (b"\x04\x22\x4d\x18", "lz4")):
        if head.startswith(magic):
            if shutil.which(tool) is None:
                raise VerityError("initrd: %s-compressed; install %s to read it" % (tool, tool))
            proc = _run([tool, "-dc"], input=rest)
            if proc.returncode != 0 and not proc.stdout:
                raise VerityError("initrd: %s -dc failed: %s" % (tool, processes.output_tail(proc.stderr)))
            return proc.stdout, len(data)  # the tool reads to the end: nothing is expected after the last stream
    return None, pos


def initrd_files(data, wanted=(VERITYTAB_PATH,)):
    """{path: bytes} of the wanted regular files (paths without a leading '/') in an initrd image.

    Like the kernel: one or more cpio archives, each plain or compressed (gzip, xz, lzma, bzip2, zstd, lz4), with
    zero padding between them; a later copy of a file wins (dracut's early microcode archive comes first).
    """
    wanted = set(w.lstrip("/") for w in wanted)
    found = {}
    pos = 0
    view = memoryview(data)
    while pos < len(data):
        if data[pos] == 0:
            pos += 1
            continue
        if bytes(view[pos:pos + 6]) in _CPIO_MAGICS:
            pos = _read_cpio(view, pos, wanted, found)
            continue
        try:
            inner, end = _decompress(view, pos)
        except (zlib.error, lzma.LZMAError, OSError, EOFError) as exc:
            raise VerityError("initrd: cannot decompress the archive at offset %d: %s" % (pos, exc))
        if inner is None:
            raise VerityError("initrd: unknown data at offset %d (magic %s); expected a cpio archive or a gzip, xz, "
                              "lzma, bzip2, zstd or lz4 stream" % (pos, bytes(view[pos:pos + 4]).hex()))
        found.update(initrd_files(inner, wanted))
        pos = end
    return found


def veritytab_from_uki(path):
    """The text of /etc/veritytab inside the UKI's .initrd section."""
    try:
        with open(path, "rb") as handle:
            image = PeImage(handle.read(), name=path)
    except (IOError, OSError) as exc:
        raise VerityError("uki: cannot read %s (%s)" % (path, exc))
    except ImageError as exc:
        raise VerityError("uki: %s is not a PE/EFI image: %s" % (path, exc))
    section = image.section(".initrd")
    if section is None:
        raise VerityError("uki: %s has no .initrd section (expected a Unified Kernel Image with an initrd)" % path)
    files = initrd_files(bytes(image.section_content(section)))
    if VERITYTAB_PATH not in files:
        raise VerityError("uki: the initrd of %s holds no /etc/veritytab (was the image built with dm-verity?)" % path)
    return files[VERITYTAB_PATH].decode("utf-8", "replace")


# ---------------------------------------------------------------- GPT disks

def gpt_partitions(disk):
    """[{number, offset, size, type, guid, label}] (bytes, lowercase GUIDs) of a raw GPT disk image."""
    try:
        with open(disk, "rb") as handle:
            header = handle.read(2 * SECTOR)[SECTOR:]
            if len(header) < 92 or header[:8] != b"EFI PART":
                raise VerityError("disk: %s is not a raw GPT disk image (no 'EFI PART' header at LBA 1)" % disk)
            entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
            if entry_size < 128 or count > 1024:
                raise VerityError("disk: %s has an implausible GPT partition table" % disk)
            handle.seek(entries_lba * SECTOR)
            table = handle.read(count * entry_size)
    except (IOError, OSError) as exc:
        raise VerityError("disk: cannot read %s (%s)" % (disk, exc))
    partitions = []
    for index in range(len(table) // entry_size):
        entry = table[index * entry_size:(index + 1) * entry_size]
        if entry[:16] == b"\0" * 16:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        partitions.append({
            "number": index + 1,
            "offset": first * SECTOR,
            "size": (last - first + 1) * SECTOR,
            "type": str(uuid.UUID(bytes_le=entry[:16])),
            "guid": str(uuid.UUID(bytes_le=entry[16:32])),
            "label": entry[56:128].decode("utf-16-le", "replace").split("\0", 1)[0],
        })
    return partitions


def filesystem_uuid(disk, partition):
    """The filesystem UUID blkid finds in a partition of a disk image (None when it finds none)."""
    if shutil.which("blkid") is None:
        return None
    proc = _run(["blkid", "-p", "-o", "export", "-O", str(partition["offset"]), "-S", str(partition["size"]), disk])
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("UUID="):
            return line.split("=", 1)[1].strip().lower()
    return None


def select_partition(disk, number=None, label=None, type_guid=None, device=None):
    """The partition of ``disk`` chosen by number, GPT label or type GUID, or else by a veritytab device
    (``UUID=...`` of the filesystem, ``PARTUUID=...``, ``PARTLABEL=...``)."""
    partitions = gpt_partitions(disk)
    listing = ", ".join("%d (%s, %s)" % (p["number"], p["label"] or "no label", p["type"]) for p in partitions)
    if number is not None:
        chosen = [p for p in partitions if p["number"] == number]
        what = "partition: no partition %d on %s" % (number, disk)
    elif label is not None:
        chosen = [p for p in partitions if p["label"] == label]
        what = "partition_label: no partition labelled %r on %s" % (label, disk)
    elif type_guid is not None:
        chosen = [p for p in partitions if p["type"] == type_guid.lower()]
        what = "partition_type: no partition of type %s on %s" % (type_guid, disk)
    elif device:
        kind, _sep, value = device.partition("=")
        value = value.strip('"').lower()
        if kind == "UUID":
            chosen = [p for p in partitions if filesystem_uuid(disk, p) == value]
        elif kind == "PARTUUID" or device.startswith("/dev/disk/by-partuuid/"):
            value = value or device.rsplit("/", 1)[1].lower()
            chosen = [p for p in partitions if p["guid"] == value]
        elif kind == "PARTLABEL":
            chosen = [p for p in partitions if p["label"].lower() == value]
        else:
            raise VerityError("disk: give partition, partition_label or partition_type (the veritytab's data device "
                              "%r names no filesystem UUID, PARTUUID or PARTLABEL to find it by)" % device)
        what = "disk: no partition of %s matches the veritytab's data device %s" % (disk, device)
    else:
        raise VerityError("disk: give partition, partition_label or partition_type to say which partition of %s "
                          "holds the verity data" % disk)
    if not chosen:
        raise VerityError("%s (partitions: %s)" % (what, listing or "none"))
    if len(chosen) > 1:
        raise VerityError("%s: matches partitions %s; give partition (the number)" % (
            what.split(":", 1)[0], ", ".join(str(p["number"]) for p in chosen)))
    return chosen[0]


@contextlib.contextmanager
def partition_access(disk, partition, tmpdir=None, needed=None):
    """Yield (path, how): a read-only view of the partition, a loop device (root) or else a temporary copy.

    ``needed``: bytes from the partition's start that hold the data and hash tree; a copy stops there (KIWI's
    partitions are far larger than the filesystem and its tree).
    """
    if os.geteuid() == 0 and shutil.which("losetup"):
        proc = _run(["losetup", "--find", "--show", "--read-only", "--offset", str(partition["offset"]),
                     "--sizelimit", str(partition["size"]), disk])
        device = proc.stdout.decode().strip()
        if proc.returncode == 0 and device:
            try:
                yield device, "loop"
            finally:
                _run(["losetup", "--detach", device])
            return
    work = tempfile.mkdtemp(prefix="attestable-verity-", dir=tmpdir)
    try:
        copy = os.path.join(work, "partition.img")
        with atomic_file.replacing(copy) as tmp:
            with open(disk, "rb") as source, open(tmp, "wb") as target:
                source.seek(partition["offset"])
                left = min(partition["size"], needed or partition["size"])
                while left > 0:
                    chunk = source.read(min(left, 4 * 1024 * 1024))
                    if not chunk:
                        raise VerityError("disk: %s ends inside partition %d" % (disk, partition["number"]))
                    target.write(chunk)
                    left -= len(chunk)
        yield copy, "copy"
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- veritysetup

def _run(argv, input=None):
    """processes.run; VerityError naming the program when it cannot be started."""
    try:
        return processes.run(argv, input=input)
    except processes.ProcessNotStarted as exc:
        raise VerityError("%s could not be started: %s" % (argv[0], exc.os_error))


def _veritysetup(args):
    if shutil.which("veritysetup") is None:
        raise VerityError("veritysetup is not installed (Debian: cryptsetup-bin, AL2023: cryptsetup)")
    proc = _run(["veritysetup"] + args)
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    return proc.returncode, out, " ".join(err.split())


def _fields(text):
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip().lower()] = value.strip()
    return values


def option_args(options):
    """veritysetup arguments for veritytab options (hash-offset is passed separately)."""
    args = []
    for key, flag in sorted(_VALUE_OPTIONS.items()):
        if flag and key != "hash-offset" and key in options:
            args.append("%s=%s" % (flag, options[key]))
    if str(options.get("superblock", "")).lower() in ("false", "no", "0"):
        args.append("--no-superblock")
    return args


def dump(hash_path, hash_offset, options=None):
    """The verity parameters (superblock) at hash_offset; VerityError when there is none."""
    if str((options or {}).get("superblock", "")).lower() in ("false", "no", "0"):
        options = options or {}
        return {
            "data_blocks": options.get("data-blocks"),
            "data_block_size": options.get("data-block-size", 4096),
            "hash_block_size": options.get("hash-block-size", 4096),
            "hash_algorithm": options.get("hash", "sha256"),
            "salt": options.get("salt"),
            "hash_type": options.get("format", 1),
            "uuid": None,
        }
    rc, out, err = _veritysetup(["dump", "--hash-offset=%d" % hash_offset, hash_path])
    if rc != 0:
        raise VerityError("hash_offset: no dm-verity superblock at byte %d of the hash area (%s); give the hash "
                          "offset the image was formatted with (KIWI: the veritytab's hash-offset=)"
                          % (hash_offset, err or "veritysetup dump rc=%d" % rc))
    values = _fields(out)

    def number(key):
        value = values.get(key, "")
        return int(value) if value.isdigit() else None

    return {
        "data_blocks": number("data blocks"),
        "data_block_size": number("data block size"),
        "hash_blocks": number("hash blocks"),
        "hash_block_size": number("hash block size"),
        "hash_algorithm": values.get("hash algorithm"),
        "salt": values.get("salt"),
        "hash_type": number("hash type"),
        "uuid": values.get("uuid"),
    }


def actual_root_hash(data_path, parameters, tmpdir=None):
    """The root hash the data has now, computed with the same salt and block sizes into a scratch hash file."""
    if not parameters.get("data_blocks") or not parameters.get("salt"):
        return None
    work = tempfile.mkdtemp(prefix="attestable-verity-", dir=tmpdir)
    try:
        args = ["format", "--no-superblock", "--data-blocks=%d" % parameters["data_blocks"],
                "--data-block-size=%d" % parameters["data_block_size"],
                "--hash-block-size=%d" % parameters["hash_block_size"],
                "--hash=%s" % parameters["hash_algorithm"], "--salt=%s" % parameters["salt"],
                "--format=%d" % (parameters.get("hash_type") or 1), data_path, os.path.join(work, "hash")]
        rc, out, _err = _veritysetup(args)
        if rc != 0:
            return None
        root = _fields(out).get("root hash", "")
        return root.lower() if _HEX.match(root) else None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def verify(data_path, hash_path, root_hash, hash_offset=0, options=None, tmpdir=None):
    """Run ``veritysetup verify``; returns a dict: verified, the superblock's parameters, data_size, and on
    failure ``message`` (veritysetup's words) and ``actual_root_hash`` (of the data as it is now)."""
    options = dict(options or {})
    root_hash = root_hash.lower()
    if not _HEX.match(root_hash) or len(root_hash) % 2:
        raise VerityError("root_hash: %r is not hexadecimal" % root_hash)
    parameters = dump(hash_path, hash_offset, options)
    args = ["verify", "--hash-offset=%d" % hash_offset] + option_args(options) + [data_path, hash_path, root_hash]
    rc, _out, err = _veritysetup(args)
    result = dict(parameters)
    result.update({
        "verified": rc == 0,
        "root_hash": root_hash,
        "hash_offset": hash_offset,
        "data_size": (parameters["data_blocks"] or 0) * (parameters["data_block_size"] or 0) or None,
    })
    if parameters.get("hash_blocks") and parameters.get("hash_block_size"):
        result["hash_size"] = parameters["hash_blocks"] * parameters["hash_block_size"]
    if rc != 0:
        result["message"] = err or "veritysetup verify rc=%d" % rc
        result["actual_root_hash"] = actual_root_hash(data_path, parameters, tmpdir)
    return result


# ---------------------------------------------------------------- what the verity_verify module does

class VerityMismatch(VerityError):
    """The data does not verify against the root hash; ``result`` holds what was found."""

    def __init__(self, message, result):
        super(VerityMismatch, self).__init__(message)
        self.result = result


def _read_veritytab(value):
    """veritytab option: a file path or the text itself."""
    if "\n" not in value and os.path.isfile(value):
        try:
            with open(value, "r") as handle:
                return handle.read(), value
        except (IOError, OSError) as exc:
            raise VerityError("veritytab: cannot read %s (%s)" % (value, exc))
    if len(value.split()) < 4:
        raise VerityError("veritytab: %r is neither a file nor veritytab text ('NAME DATA-DEVICE HASH-DEVICE "
                          "ROOT-HASH [OPTIONS]')" % value[:200])
    return value, None


def _check_file(option, path):
    if not os.path.isfile(path) and not (os.path.exists(path) and not os.path.isdir(path)):
        raise VerityError("%s: %s is not a file" % (option, path))
    if not os.access(path, os.R_OK):
        raise VerityError("%s: %s is not readable" % (option, path))


def reference(params):
    """(root hash, source, veritytab entry or None) from root_hash, veritytab or uki."""
    given = [name for name in ("root_hash", "veritytab", "uki") if params.get(name)]
    if len(given) != 1:
        raise VerityError("give exactly one of root_hash, veritytab (a file or its text) or uki (whose initrd holds "
                          "/etc/veritytab)%s" % ("; got %s" % ", ".join(given) if given else ""))
    if params.get("root_hash"):
        root = str(params["root_hash"]).strip().lower()
        if not _HEX.match(root) or len(root) % 2:
            raise VerityError("root_hash: %r is not hexadecimal" % params["root_hash"])
        return root, "root_hash", None
    if params.get("uki"):
        _check_file("uki", params["uki"])
        text, source = veritytab_from_uki(params["uki"]), "uki"
    else:
        text, _path = _read_veritytab(params["veritytab"])
        source = "veritytab"
    entry = select_entry(parse_veritytab(text), params.get("veritytab_name"))
    return entry["root_hash"], source, entry


def check(params, tmpdir=None):
    """Verify; returns the result dict or raises VerityMismatch (fail_on_mismatch) / VerityError (bad input)."""
    if bool(params.get("disk")) == bool(params.get("data")):
        raise VerityError("give exactly one of disk (a raw GPT disk image, with partition, partition_label or "
                          "partition_type) or data (a file holding the verity-protected data)")
    selectors = [name for name in ("partition", "partition_label", "partition_type") if params.get(name) is not None]
    if params.get("data") and selectors:
        raise VerityError("%s: only used with disk (data is the partition's contents already)" % selectors[0])
    if len(selectors) > 1:
        raise VerityError("give at most one of partition, partition_label and partition_type; got %s"
                          % ", ".join(selectors))
    root_hash, source, entry = reference(params)
    options = dict(entry["options"]) if entry else {}
    hash_offset = params.get("hash_offset")
    if hash_offset is None:
        hash_offset = options.get("hash-offset")
    if hash_offset is not None and hash_offset < 0:
        raise VerityError("hash_offset: %r must be a byte offset >= 0" % hash_offset)
    hash_file = params.get("hash_file")
    if hash_file:
        _check_file("hash_file", hash_file)
    elif hash_offset is None:
        raise VerityError("hash_offset: give the byte offset of the hash tree in the data (KIWI: the size of the "
                          "filesystem, the veritytab's hash-offset=), or hash_file for a separate hash device")
    hash_offset = hash_offset or 0
    result = {"root_hash_source": source}
    if entry:
        result["veritytab"] = entry
    if params.get("data"):
        _check_file("data", params["data"])
        accessed = contextlib.nullcontext((params["data"], "file"))
        partition = None
    else:
        _check_file("disk", params["disk"])
        partition = select_partition(params["disk"], params.get("partition"), params.get("partition_label"),
                                     params.get("partition_type"), entry["data_device"] if entry else None)
        result["partition"] = partition
        # the data, then at hash_offset the superblock and the tree (data/127 for sha256 in 4 KiB blocks; a
        # quarter covers any hash and block size)
        needed = None if hash_file else hash_offset + hash_offset // 4 + 1024 * 1024
        accessed = partition_access(params["disk"], partition, tmpdir, needed)
    with accessed as (data_path, how):
        result["accessed_via"] = how
        result.update(verify(data_path, hash_file or data_path, root_hash, hash_offset, options, tmpdir))
    if not result["verified"] and params.get("fail_on_mismatch", True):
        where = ("partition %d of %s" % (partition["number"], params["disk"])) if partition else params["data"]
        actual = result.get("actual_root_hash")
        raise VerityMismatch(
            "dm-verity verification of %s failed: expected root hash %s (from %s), %s; veritysetup: %s"
            % (where, root_hash, source,
               "the data's root hash is %s" % actual if actual and actual != root_hash
               else ("the data's root hash is the same, so the hash tree is damaged" if actual
                     else "the data's root hash could not be computed"),
               result.get("message")), result)
    return result

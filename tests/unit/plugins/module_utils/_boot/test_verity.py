# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""verity: veritytab parsing, initrd reading (cpio, compressed, concatenated), GPT lookup, input checks."""
import gzip
import lzma
import os
import shutil
import subprocess

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._boot import verity
from ansible_collections.attestable.ami.plugins.module_utils._boot.verity import VerityError

ROOT = "c7a0f3c55c5d0c3b0b9e1c1ed8d06f9db8d7bbd5c0a4f0e53cd2b44f1c8ea6e1"
# as KIWI 11 writes it (kiwi/builder/disk.py _write_veritytab_to_boot_image)
KIWI_TAB = "verityroot UUID=1b4e28ba-2fa1-11d2-883f-0016d3cca427 UUID=1b4e28ba-2fa1-11d2-883f-0016d3cca427 " \
           "%s hash-offset=245760000,hash-block-size=4096\n" % ROOT.upper()


def test_kiwi_veritytab_is_parsed_with_numeric_options():
    [entry] = verity.parse_veritytab(KIWI_TAB)
    assert entry["name"] == "verityroot"
    assert entry["data_device"] == entry["hash_device"] == "UUID=1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert entry["root_hash"] == ROOT  # lowercased
    assert entry["options"] == {"hash-offset": 245760000, "hash-block-size": 4096}


def test_veritytab_with_comments_flags_and_several_entries():
    text = ("# generated\n\nroot /dev/vda3 /dev/vda4 %s data-block-size=4096,panic-on-corruption,hash=sha256,"
            "salt=00ff,superblock=false,data-blocks=10\nusr PARTLABEL=usr PARTLABEL=usr %s\n" % (ROOT, "ab" * 32))
    entries = verity.parse_veritytab(text)
    assert [e["name"] for e in entries] == ["root", "usr"]
    assert entries[0]["options"] == {"data-block-size": 4096, "panic-on-corruption": True, "hash": "sha256",
                                     "salt": "00ff", "superblock": "false", "data-blocks": 10}
    assert entries[1]["options"] == {}
    assert verity.select_entry(entries, "usr")["root_hash"] == "ab" * 32
    with pytest.raises(VerityError, match="2 entries \\(root, usr\\); give veritytab_name"):
        verity.select_entry(entries)
    with pytest.raises(VerityError, match="no entry named 'var'"):
        verity.select_entry(entries, "var")
    assert "--no-superblock" in verity.option_args(entries[0]["options"])
    assert "--salt=00ff" in verity.option_args(entries[0]["options"])


@pytest.mark.parametrize("text, message", [
    ("", "no entry found"),
    ("# only a comment\n", "no entry found"),
    ("root /dev/vda3 /dev/vda3\n", "line 1: .* has 3 fields"),
    ("root /dev/vda3 /dev/vda3 nothex\n", "line 1: root hash 'nothex' is not hexadecimal"),
    ("\nroot a a %s hash-offset=12k\n" % ROOT, "line 2: option hash-offset needs a number"),
])
def test_bad_veritytab_is_refused_naming_the_line(text, message):
    with pytest.raises(VerityError, match=message):
        verity.parse_veritytab(text)


def _cpio(files):
    """A newc cpio archive made by GNU cpio from {name: bytes} (directories created as needed)."""
    import tempfile
    tree = tempfile.mkdtemp()
    try:
        for name, data in files.items():
            path = os.path.join(tree, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)
        names = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
        return subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=tree, input=names, capture_output=True,
                              check=True).stdout
    finally:
        shutil.rmtree(tree)


def _tool(name, data, *args):
    if shutil.which(name) is None:
        pytest.skip("%s not installed" % name)
    return subprocess.run([name] + list(args), input=data, capture_output=True, check=True).stdout


MAIN = {"etc/veritytab": KIWI_TAB.encode(), "usr/bin/x": b"\x7fELF" + b"\0" * 5000}


@pytest.mark.parametrize("compress", [
    lambda d: d,
    gzip.compress,
    lzma.compress,
    lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    lambda d: __import__("bz2").compress(d),
    lambda d: _tool("zstd", d, "-c", "-q"),
    lambda d: _tool("lz4", d, "-c", "-l", "-q"),   # the legacy format the kernel reads
    lambda d: _tool("lz4", d, "-c", "-q"),
], ids=["plain", "gzip", "xz", "lzma", "bzip2", "zstd", "lz4-legacy", "lz4-frame"])
def test_initrd_in_every_compression_yields_the_veritytab(compress):
    assert verity.initrd_files(compress(_cpio(MAIN))) == {"etc/veritytab": KIWI_TAB.encode()}


def test_dracut_layout_early_cpio_padding_then_compressed_main_archive():
    early = _cpio({"early_cpio": b"1\n", "kernel/x86/microcode/GenuineIntel.bin": b"\1" * 100})
    padding = b"\0" * (512 - len(early) % 512)
    image = early + padding + gzip.compress(_cpio(MAIN))
    assert verity.initrd_files(image, ("etc/veritytab", "early_cpio")) == {
        "etc/veritytab": KIWI_TAB.encode(), "early_cpio": b"1\n"}


def test_a_later_archive_overrides_an_earlier_copy():
    first = _cpio({"etc/veritytab": b"old 1 1 00\n"})
    second = gzip.compress(_cpio({"etc/veritytab": b"new 1 1 ff\n"}))
    assert verity.initrd_files(first + second)["etc/veritytab"] == b"new 1 1 ff\n"


def test_an_initrd_without_veritytab_or_with_garbage():
    assert verity.initrd_files(gzip.compress(_cpio({"init": b"#!/bin/sh\n"}))) == {}
    with pytest.raises(VerityError, match="unknown data at offset 0"):
        verity.initrd_files(b"MZ\x90\x00garbage")
    archive = _cpio(MAIN)
    with pytest.raises(VerityError, match="cpio member 'usr/bin/x' runs past the end"):
        verity.initrd_files(archive[:archive.index(b"\x7fELF") + 100])
    with pytest.raises(VerityError, match="broken cpio header at offset 0"):
        verity.initrd_files(b"070701" + b"x" * 200)


def test_gpt_partitions_and_selection(tmp_path):
    disk = str(tmp_path / "disk.raw")
    with open(disk, "wb") as handle:
        handle.truncate(8 * 1024 * 1024)
    subprocess.run(["sgdisk", "--new=1:2048:+2M", "--typecode=1:ef00", "--change-name=1:p.UEFI",
                    "--new=2:0:+3M", "--typecode=2:8300", "--change-name=2:p.lxroot",
                    "--partition-guid=2:0fc63daf-8483-4772-8e79-3d69d8477de4", disk], check=True, capture_output=True)
    parts = verity.gpt_partitions(disk)
    assert [(p["number"], p["label"], p["offset"], p["size"]) for p in parts] == [
        (1, "p.UEFI", 2048 * 512, 2 * 1024 * 1024), (2, "p.lxroot", 3 * 1024 * 1024, 3 * 1024 * 1024)]
    assert parts[0]["type"] == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
    assert verity.select_partition(disk, number=2)["label"] == "p.lxroot"
    assert verity.select_partition(disk, label="p.UEFI")["number"] == 1
    assert verity.select_partition(disk, type_guid="0FC63DAF-8483-4772-8E79-3D69D8477DE4")["number"] == 2
    assert verity.select_partition(disk, device="PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4")["number"] == 2
    assert verity.select_partition(disk, device="PARTLABEL=p.lxroot")["number"] == 2
    with pytest.raises(VerityError, match="partition: no partition 3 on .*partitions: 1 \\(p.UEFI"):
        verity.select_partition(disk, number=3)
    with pytest.raises(VerityError, match="no partition of .* matches the veritytab's data device UUID=abc"):
        verity.select_partition(disk, device="UUID=abc")
    with pytest.raises(VerityError, match="give partition, partition_label or partition_type"):
        verity.select_partition(disk)
    with pytest.raises(VerityError, match="not a raw GPT disk image"):
        verity.gpt_partitions(__file__)


@pytest.mark.parametrize("params, message", [
    ({"root_hash": ROOT}, "give exactly one of disk"),
    ({"disk": "/a", "data": "/b", "root_hash": ROOT}, "give exactly one of disk"),
    ({"data": "/a"}, "give exactly one of root_hash, veritytab .* or uki"),
    ({"data": "/a", "root_hash": ROOT, "uki": "/u"}, "got root_hash, uki"),
    ({"data": "/a", "root_hash": "xyz"}, "root_hash: 'xyz' is not hexadecimal"),
    ({"data": "/a", "partition": 2, "root_hash": ROOT}, "partition: only used with disk"),
    ({"disk": "/a", "partition": 2, "partition_label": "x", "root_hash": ROOT}, "at most one of partition"),
    ({"data": "/nonexistent", "root_hash": ROOT}, "hash_offset: give the byte offset"),
    ({"data": "/nonexistent", "root_hash": ROOT, "hash_offset": -1}, "hash_offset: -1 must be"),
    ({"data": "/nonexistent", "root_hash": ROOT, "hash_offset": 0}, "data: /nonexistent is not a file"),
    ({"data": "/a", "veritytab": "verityroot only three"}, "veritytab: .* is neither a file nor veritytab text"),
    ({"data": "/a", "uki": "/nonexistent.efi"}, "uki: /nonexistent.efi is not a file"),
])
def test_bad_inputs_are_refused_naming_the_input(params, message):
    with pytest.raises(VerityError, match=message):
        verity.check(params)


def test_a_uki_without_initrd_is_refused(tmp_path):
    stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    if not os.path.isfile(stub):
        pytest.skip("systemd-boot-efi not installed")
    with pytest.raises(VerityError, match="has no .initrd section"):
        verity.veritytab_from_uki(stub)
    with pytest.raises(VerityError, match="is not a PE/EFI image"):
        verity.veritytab_from_uki(__file__)

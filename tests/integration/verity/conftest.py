# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One KIWI-like verity disk per module (erofs + veritysetup format into the same file, GPT, UKI with veritytab)."""
import hashlib
import os
import shutil
import tempfile

import pytest

import verity_disk


@pytest.fixture(scope="module")
def verity_image():
    """dict(disk, filesystem (the erofs+hash file), uki, veritytab (path), verity (root_hash, hash_offset, ...))."""
    work = tempfile.mkdtemp(prefix="verity-img-")
    try:
        tree = os.path.join(work, "tree")
        os.makedirs(os.path.join(tree, "etc"))
        os.makedirs(os.path.join(tree, "usr", "bin"))
        with open(os.path.join(tree, "etc", "os-release"), "w") as handle:
            handle.write('NAME="verity test"\n')
        tool = os.urandom(3 * 1024 * 1024)  # incompressible: several MiB of data blocks
        with open(os.path.join(tree, "usr", "bin", "tool"), "wb") as handle:
            handle.write(tool)
        filesystem = os.path.join(work, "root.erofs")
        verity = verity_disk.make_verity_filesystem(filesystem, tree)
        disk = verity_disk.make_disk(os.path.join(work, "disk.raw"), filesystem)
        tab = os.path.join(work, "veritytab")
        with open(tab, "w") as handle:
            handle.write(verity_disk.veritytab_line(verity))
        uki = verity_disk.make_uki_with_veritytab(os.path.join(work, "image.efi"), verity_disk.veritytab_line(verity),
                                                  work)
        yield {"dir": work, "disk": disk, "filesystem": filesystem, "uki": uki, "veritytab": tab, "verity": verity,
               "tool_sha256": hashlib.sha256(tool).hexdigest()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def tampered_disk(verity_image, tmp_path):
    """A copy of the disk with one byte of the erofs data area flipped (inside the filesystem, not the hash tree)."""
    copy = str(tmp_path / "tampered.raw")
    shutil.copyfile(verity_image["disk"], copy)
    verity_disk.flip_byte(copy, verity_disk.root_partition_offset(copy) + 1024 * 1024 + 17)
    return copy

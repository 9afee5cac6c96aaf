# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""scripts/vfat/: the mount.vfat / umount.ramfs pair that lets KIWI mount an EFI system partition on a kernel
without vfat. Real FAT images (mkfs.vfat), real ramfs mounts, real mtools; the FAT is read back with mtools and
checked with fsck.vfat. The helpers are called the way mount(8)/umount(8) call them (and, where they are installed
in /sbin, through mount(8)/umount(8) themselves)."""
import hashlib
import os
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
HELPERS = os.path.join(ROOT, "scripts", "vfat")
MOUNT = os.path.join(HELPERS, "mount.vfat")
UMOUNT = os.path.join(HELPERS, "umount.ramfs")
INSTALL = os.path.join(HELPERS, "install-helpers.sh")
MTOOLS = dict(os.environ, MTOOLS_SKIP_CHECK="1")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a ramfs needs root")


def run(*argv, **kwargs):
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=MTOOLS, check=False, **kwargs)
    assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
    return proc.stdout


def fat_tree(image):
    """{path: content} of every file and {path: None} of every directory on the FAT, read with mtools."""
    tree = {}
    for line in run("mdir", "-/", "-b", "-i", image, "::/").splitlines():
        path = line.strip()[len("::/"):]
        if path.endswith("/"):
            tree[path.rstrip("/")] = None
        elif path:
            tree[path] = run("mtype", "-i", image, "::/" + path)
    return tree


def fsck_clean(image):
    proc = subprocess.run(["fsck.vfat", "-n", image], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "differ" not in proc.stdout and "Free cluster summary wrong" not in proc.stdout, proc.stdout


def digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def is_mounted(path):
    return subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0


@pytest.fixture
def esp(tmp_path):
    """A 40 MiB FAT16 image holding what systemd-boot's ESP holds."""
    image = str(tmp_path / "esp.img")
    run("truncate", "-s", "40M", image)
    run("mkfs.vfat", "-F", "16", "-n", "ESP", image)
    run("mmd", "-i", image, "::/EFI", "::/EFI/BOOT", "::/EFI/systemd", "::/loader", "::/loader/entries")
    for name, text in (("EFI/BOOT/BOOTX64.EFI", "systemd-boot"), ("EFI/systemd/systemd-bootx64.efi", "systemd-boot"),
                       ("loader/loader.conf", "timeout 0\n"), ("loader/entries/old.conf", "title old\n")):
        source = tmp_path / "src"
        source.write_text(text)
        run("mcopy", "-i", image, str(source), "::/" + name)
    return image


@pytest.fixture
def mounts(tmp_path):
    """Mount points; whatever a failing test left mounted is unmounted through the helper afterwards."""
    made = []

    def _make(name):
        path = tmp_path / name
        path.mkdir()
        made.append(path)
        return path

    yield _make
    for path in reversed(made):
        while is_mounted(path):
            subprocess.run([UMOUNT, str(path)], check=False)
            if is_mounted(path):
                subprocess.run(["umount", "-i", "-l", str(path)], check=False)


@needs_root
def test_two_mounts_of_one_fat_share_one_copy_and_are_written_back_together(esp, mounts):
    first, second = mounts("first"), mounts("second")
    run(MOUNT, esp, str(first), "-o", "rw")
    run(MOUNT, esp, str(second), "-o", "rw")
    # What one mount writes, the other sees at once (as on a real vfat mounted twice).
    (first / "EFI" / "Linux").mkdir()
    (first / "EFI" / "Linux" / "kiwi.efi").write_text("the uki")
    assert (second / "EFI" / "Linux" / "kiwi.efi").read_text() == "the uki"
    (second / "EFI" / "BOOT" / "BOOTX64.EFI").write_text("the uki")
    run(UMOUNT, str(first))
    assert not is_mounted(first) and is_mounted(second)
    # Nothing is written while another mount of the FAT is still there.
    assert fat_tree(esp)["EFI/BOOT/BOOTX64.EFI"] == "systemd-boot" and "EFI/Linux" not in fat_tree(esp)
    run(UMOUNT, str(second))
    assert not is_mounted(second)
    tree = fat_tree(esp)
    assert tree["EFI/BOOT/BOOTX64.EFI"] == "the uki"
    assert tree["EFI/Linux/kiwi.efi"] == "the uki" and tree["EFI/Linux"] is None
    assert tree["loader/loader.conf"] == "timeout 0\n"
    fsck_clean(esp)


@needs_root
def test_deleted_files_and_directories_are_deleted_on_the_fat(esp, mounts):
    target = mounts("esp")
    run(MOUNT, esp, str(target))
    subprocess.run(["rm", "-rf", str(target / "EFI" / "systemd"), str(target / "loader")], check=True)
    (target / "EFI" / "BOOT" / "BOOTX64.EFI").unlink()
    (target / "EFI" / "BOOT" / "BOOTX64.EFI").write_text("replaced")
    (target / "EFI" / "new" / "deeper").mkdir(parents=True)
    run(UMOUNT, str(target))
    assert fat_tree(esp) == {"EFI": None, "EFI/BOOT": None, "EFI/BOOT/BOOTX64.EFI": "replaced",
                             "EFI/new": None, "EFI/new/deeper": None}
    fsck_clean(esp)
    # Mounted again, the FAT's new state is what the copy holds.
    run(MOUNT, esp, str(target))
    assert sorted(os.listdir(str(target / "EFI"))) == ["BOOT", "new"]
    run(UMOUNT, str(target))


@needs_root
def test_read_only_mount_writes_nothing(esp, mounts):
    target = mounts("ro")
    before = digest(esp)
    run(MOUNT, esp, str(target), "-o", "ro")
    assert (target / "loader" / "loader.conf").read_text() == "timeout 0\n"
    with pytest.raises(OSError):
        (target / "loader" / "loader.conf").write_text("changed")
    run(UMOUNT, str(target))
    assert not is_mounted(target)
    assert digest(esp) == before


@needs_root
def test_other_ramfs_mounts_pass_through_untouched(esp, mounts, tmp_path):
    ours, other = mounts("ours"), mounts("other")
    run(MOUNT, esp, str(ours))
    run("mount", "-i", "-t", "ramfs", "-o", "mode=0755", "scratch", str(other))
    (other / "EFI").mkdir()
    (other / "EFI" / "stray.efi").write_text("not for the FAT")
    state = sorted(os.listdir("/run/attestable-vfat"))
    before = digest(esp)
    run(UMOUNT, str(other))
    assert not is_mounted(other) and is_mounted(ours)
    assert sorted(os.listdir("/run/attestable-vfat")) == state
    run(UMOUNT, str(ours))
    assert digest(esp) == before and "EFI/stray.efi" not in fat_tree(esp)


@needs_root
def test_partition_of_a_mapped_disk_is_written_back_through_the_device(tmp_path, mounts):
    """KIWI's case: the ESP is a partition of the disk it keeps on a loop device (/dev/loopNp1)."""
    disk = str(tmp_path / "disk.raw")
    run("truncate", "-s", "64M", disk)
    run("sgdisk", "-n", "1:2048:+40M", "-t", "1:ef00", "-n", "2:0:0", "-t", "2:8300", disk)
    offset = 2048 * 512
    run("mkfs.vfat", "-F", "16", "--offset", "2048", disk, str(40 * 1024))
    run("mmd", "-i", "%s@@%d" % (disk, offset), "::/EFI")
    loop = run("losetup", "--find", "--show", disk).strip()
    target = mounts("esp")
    try:
        run("partx", "--add", loop)  # as KIWI maps its disk's partitions
        assert os.path.exists(loop + "p1"), "no partition node for " + loop
        run(MOUNT, loop + "p1", str(target))
        assert run("findmnt", "-n", "-o", "SOURCE", str(target)).strip() == "mount.vfat:" + loop + "p1"
        (target / "EFI" / "BOOT").mkdir()
        (target / "EFI" / "BOOT" / "BOOTX64.EFI").write_text("through the partition")
        run(UMOUNT, str(target))
    finally:
        subprocess.run(["partx", "--delete", loop], check=False)
        subprocess.run(["losetup", "-d", loop], check=False)
    assert fat_tree("%s@@%d" % (disk, offset))["EFI/BOOT/BOOTX64.EFI"] == "through the partition"


@needs_root
@pytest.mark.skipif(not os.path.isfile("/sbin/mount.vfat") or "attestable-vfat-helper" not in open("/sbin/mount.vfat").read(),
                    reason="the helpers are not installed in /sbin (scripts/bootstrap.sh installs them where vfat is missing)")
def test_mount_and_umount_commands_use_the_helpers_for_an_image_file(esp, mounts):
    """mount(8) with an image file: an auto-clearing loop device that is gone once mount returns."""
    first, second = mounts("m1"), mounts("m2")
    run("mount", esp, str(first))
    run("mount", "-o", "ro", esp, str(second))
    assert "ro" in run("findmnt", "-n", "-o", "OPTIONS", str(second)).split(",")
    (first / "EFI" / "BOOT" / "BOOTX64.EFI").write_text("via mount(8)")
    assert (second / "EFI" / "BOOT" / "BOOTX64.EFI").read_text() == "via mount(8)"
    run("umount", str(second))
    run("umount", str(first))
    assert fat_tree(esp)["EFI/BOOT/BOOTX64.EFI"] == "via mount(8)"
    fsck_clean(esp)


def _install(tmp_path, filesystems_text, existing=None):
    sbin = tmp_path / "sbin"
    sbin.mkdir(exist_ok=True)
    if existing:
        (sbin / "mount.vfat").write_text(existing)
    filesystems = tmp_path / "filesystems"
    filesystems.write_text(filesystems_text)
    proc = subprocess.run([INSTALL, str(sbin)], env=dict(os.environ, FILESYSTEMS=str(filesystems)),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return sbin, proc.stdout


def test_installed_only_when_the_kernel_has_no_vfat(tmp_path):
    sbin, out = _install(tmp_path, "nodev\tramfs\n\text4\n\tvfat\n")
    assert os.listdir(str(sbin)) == [] and out == ""
    sbin, out = _install(tmp_path, "nodev\tramfs\n\text4\n")
    assert sorted(os.listdir(str(sbin))) == ["mount.vfat", "umount.ramfs"]
    assert "installed %s/mount.vfat" % sbin in out and "installed %s/umount.ramfs" % sbin in out
    assert os.access(str(sbin / "umount.ramfs"), os.X_OK)
    _sbin, again = _install(tmp_path, "nodev\tramfs\n\text4\n")
    assert again == ""


def test_a_helper_that_is_not_ours_is_never_replaced(tmp_path):
    real = "#!/bin/sh\n# some distribution's own mount.vfat\n"
    sbin, out = _install(tmp_path, "\text4\n", existing=real)
    assert (sbin / "mount.vfat").read_text() == real
    assert not (sbin / "umount.ramfs").exists()
    assert "not ours" in out and "nothing installed" in out

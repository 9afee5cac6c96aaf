# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""atomic_file: only regular files are read or replaced; a FIFO never blocks; an existing file keeps its mode."""
import grp
import os
import socket
import stat
import threading

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._common import atomic_file


def call_without_hanging(function, *args):
    """Run function(*args) in a thread; if it blocks (a FIFO read waits for a writer), unblock it and fail."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except Exception as exc:  # pylint: disable=broad-except
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        for path in args:
            if isinstance(path, str) and os.path.exists(path) and stat.S_ISFIFO(os.stat(path).st_mode):
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
        thread.join(10)
        pytest.fail("%s(%r) blocked on a FIFO" % (function.__name__, args))
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def special_files(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("keep me\n")
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    link = str(tmp_path / "link")
    os.symlink(str(target), link)
    directory = str(tmp_path / "dir")
    os.mkdir(directory)
    sock_path = str(tmp_path / "sock")
    sock = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(str(tmp_path))  # a relative name: AF_UNIX paths are short
    try:
        sock.bind("sock")
    finally:
        os.chdir(cwd)
    return {"a FIFO": fifo, "a symbolic link": link, "a directory": directory, "a socket": sock_path,
            "a character device": "/dev/null"}, target, sock


@pytest.mark.parametrize("kind", ["a FIFO", "a symbolic link", "a directory", "a socket", "a character device"])
def test_read_refuses_what_is_not_a_regular_file(tmp_path, kind):
    paths, _target, sock = special_files(tmp_path)
    try:
        with pytest.raises(atomic_file.UnsafeFileError) as info:
            call_without_hanging(atomic_file.read_text, paths[kind])
        assert paths[kind] in str(info.value) and kind in str(info.value)
        assert isinstance(info.value, OSError)
    finally:
        sock.close()


@pytest.mark.parametrize("kind", ["a FIFO", "a symbolic link", "a directory", "a socket"])
def test_write_refuses_and_changes_nothing(tmp_path, kind):
    paths, target, sock = special_files(tmp_path)
    before = sorted(os.listdir(str(tmp_path)))
    try:
        with pytest.raises(atomic_file.UnsafeFileError) as info:
            call_without_hanging(atomic_file.write_text, paths[kind], "new\n")
        assert paths[kind] in str(info.value) and kind in str(info.value)
    finally:
        sock.close()
    assert sorted(os.listdir(str(tmp_path))) == before, "no temporary file may be left"
    assert target.read_text() == "keep me\n", "the symlink's target must not be written through"
    assert os.path.islink(paths["a symbolic link"])


def test_existing_file_keeps_its_mode_new_file_gets_the_default(tmp_path):
    existing = tmp_path / "secret.json"
    existing.write_text("old\n")
    os.chmod(str(existing), 0o600)
    assert atomic_file.write_text(str(existing), "new\n") is True
    assert existing.read_text() == "new\n"
    assert stat.S_IMODE(os.stat(str(existing)).st_mode) == 0o600
    fresh = tmp_path / "fresh.json"
    assert atomic_file.write_text(str(fresh), "x\n") is True
    assert stat.S_IMODE(os.stat(str(fresh)).st_mode) == 0o644
    assert atomic_file.write_text(str(fresh), "x\n") is False


def test_missing_directory_is_an_error_naming_the_path(tmp_path):
    path = str(tmp_path / "no" / "such" / "m.json")
    with pytest.raises(atomic_file.UnsafeFileError, match="its directory .* does not exist") as info:
        atomic_file.write_text(path, "x")
    assert path in str(info.value)


def test_missing_file_reads_as_none_and_text_round_trips(tmp_path):
    assert atomic_file.read_text(str(tmp_path / "none")) is None
    path = tmp_path / "t.txt"
    path.write_text("h\u00e9llo\n")
    assert atomic_file.read_text(str(path)) == "h\u00e9llo\n"


def test_bytes_round_trip_and_unchanged_content_is_not_rewritten(tmp_path):
    path = str(tmp_path / "blob.bin")
    assert atomic_file.read_bytes(path) is None
    assert atomic_file.write_bytes(path, b"\x00\xffdata") is True
    inode = os.stat(path).st_ino
    assert atomic_file.read_bytes(path) == b"\x00\xffdata"
    assert atomic_file.write_bytes(path, b"\x00\xffdata") is False
    assert os.stat(path).st_ino == inode, "the same content is not written again"


def test_an_exception_in_the_block_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "disk.img"
    target.write_bytes(b"old")
    os.chmod(str(target), 0o640)
    with pytest.raises(RuntimeError, match="tool failed"):
        with atomic_file.replacing(str(target)) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"half of the new")
            raise RuntimeError("tool failed")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(str(tmp_path))) == ["disk.img"]
    with atomic_file.replacing(str(target)) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and os.path.getsize(tmp) == 0
        with open(tmp, "wb") as handle:
            handle.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(str(target)).st_mode) == 0o640
    assert sorted(os.listdir(str(tmp_path))) == ["disk.img"]


def test_copy_file_streams_and_names_a_missing_source(tmp_path):
    source = tmp_path / "src.efi"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    dest = str(tmp_path / "copy.efi")
    assert atomic_file.copy_file(str(source), dest, chunk=1024 * 1024) == dest
    assert open(dest, "rb").read() == source.read_bytes()
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o644
    missing = str(tmp_path / "missing.efi")
    with pytest.raises(atomic_file.UnsafeFileError) as info:
        atomic_file.copy_file(missing, dest)
    assert missing in str(info.value)
    assert open(dest, "rb").read() == source.read_bytes()
    assert sorted(os.listdir(str(tmp_path))) == ["copy.efi", "src.efi"]


@pytest.mark.parametrize("kind", ["a FIFO", "a symbolic link", "a directory"])
def test_copy_and_bytes_refuse_what_is_not_a_regular_file(tmp_path, kind):
    paths, target, sock = special_files(tmp_path)
    sock.close()
    for call in (lambda: atomic_file.copy_file(str(target), paths[kind]),
                 lambda: atomic_file.write_bytes(paths[kind], b"x")):
        with pytest.raises(atomic_file.UnsafeFileError) as info:
            call_without_hanging(call)
        assert paths[kind] in str(info.value) and kind in str(info.value)
    assert target.read_text() == "keep me\n"


def _module(args, check_mode=False):
    testing = pytest.importorskip("ansible.module_utils.testing")  # Ansible is not in the Python 3.9 unit venv
    from ansible.module_utils.basic import AnsibleModule

    args = dict(args, _ansible_check_mode=check_mode)
    with testing.patch_module_args(args):
        return AnsibleModule(argument_spec=dict(path=dict(type="path")), add_file_common_args=True,
                             supports_check_mode=True)


def test_set_attributes_applies_mode_and_group_and_honours_check_mode(tmp_path):
    path = str(tmp_path / "measurements.json")
    atomic_file.write_text(path, "{}\n")
    # a group other than the file's: any group for root, else one this user belongs to
    others = [g.gr_gid for g in grp.getgrall()] if os.geteuid() == 0 else os.getgroups()
    others = [gid for gid in others if gid != os.getegid()]
    if not others:
        pytest.skip("no second group to give the file to")
    group = others[0]
    module = _module(dict(path=path, mode="0600", group=str(group)), check_mode=True)
    assert atomic_file.set_attributes(module, path) is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, "check mode changes nothing"
    assert os.stat(path).st_gid == os.getegid()
    module = _module(dict(path=path, mode="0600", group=str(group)))
    assert atomic_file.set_attributes(module, path) is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and os.stat(path).st_gid == group
    assert atomic_file.set_attributes(module, path) is False, "nothing left to change"
    assert atomic_file.set_attributes(module, str(tmp_path / "not-yet"), True) is True
    assert atomic_file.write_text(path, "{\"a\": 1}\n") is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, "a rewrite keeps the mode the options set"

"""atomic_file: only regular files are read or replaced; a FIFO never blocks; an existing file keeps its mode."""
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

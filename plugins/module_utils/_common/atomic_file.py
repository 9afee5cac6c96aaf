"""Read and replace small text files safely. Plain Python 3.9+.

- Only regular files are read or replaced: a directory, a FIFO (reading one blocks until a writer comes, which
  hung the modules), a socket, a device or a symbolic link is refused with an error naming the path and what
  it is. Reads open with O_NONBLOCK and O_NOFOLLOW and check the opened file, so nothing can swap the path
  between the check and the read.
- A write goes to a temporary file in the same directory that is then renamed over the target, so readers never
  see half a file. An existing file keeps its permission bits (and, where allowed, its owner and group).
- Every failure is an UnsafeFileError, an OSError whose message names the path.
"""

import errno
import os
import stat
import tempfile

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


class UnsafeFileError(OSError):
    """A path that is not a regular file, or that cannot be read or written; the message names the path."""


def kind_of(mode):
    """'a directory', 'a FIFO (named pipe)', ... for a st_mode that is not a regular file; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _refuse(path, mode):
    raise UnsafeFileError("%s is %s, not a regular file: give the path of a regular file "
                          "(or of one to create)" % (path, kind_of(mode)))


def check_target(path):
    """Raise UnsafeFileError unless path is missing or a regular file (symbolic links are refused, not followed)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise UnsafeFileError("%s: cannot inspect it: %s" % (path, exc.strerror or exc))
    if not stat.S_ISREG(info.st_mode):
        _refuse(path, info.st_mode)
    return info


def read_text(path):
    """The file's text, or None when it does not exist. Never blocks on a FIFO, never follows a symlink."""
    if check_target(path) is None:
        return None
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno == errno.ELOOP:
            raise UnsafeFileError("%s is a symbolic link, not a regular file: give the path of a "
                                  "regular file" % path)
        raise UnsafeFileError("%s: cannot open it: %s" % (path, exc.strerror or exc))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            _refuse(path, info.st_mode)
        with os.fdopen(fd, "rb") as handle:
            fd = None
            data = handle.read()
    except UnsafeFileError:
        raise
    except OSError as exc:
        raise UnsafeFileError("%s: cannot read it: %s" % (path, exc.strerror or exc))
    finally:
        if fd is not None:
            os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeFileError("%s is not UTF-8 text: %s" % (path, exc))


def write_text(path, text, mode=0o644):
    """Replace path with text in one rename; returns True if the text changed.

    A new file gets mode; an existing regular file keeps its permission bits, owner and group.
    """
    if read_text(path) == text:
        return False
    existing = check_target(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UnsafeFileError("%s: its directory %s does not exist" % (path, directory))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    except OSError as exc:
        raise UnsafeFileError("%s: cannot create a temporary file in %s: %s"
                              % (path, directory, exc.strerror or exc))
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        if existing is not None:
            os.chmod(tmp, stat.S_IMODE(existing.st_mode))
            if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.chown(tmp, existing.st_uid, existing.st_gid)
                except OSError:
                    pass  # an unprivileged writer cannot give the file away; the mode is still kept
        else:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise UnsafeFileError("%s: cannot write it: %s" % (path, exc.strerror or exc))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True

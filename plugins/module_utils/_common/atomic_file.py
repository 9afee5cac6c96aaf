# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read and replace the files the collection produces, safely; the one writer. Plain Python 3.9+.

- Only regular files are read or replaced: a directory, a FIFO (reading one blocks until a writer comes, which
  hung the modules), a socket, a device or a symbolic link is refused with an error naming the path and what
  it is. Reads open with O_NONBLOCK and O_NOFOLLOW and check the opened file, so nothing can swap the path
  between the check and the read.
- A write goes to a temporary file in the same directory that is then renamed over the target, so readers never
  see half a file, and a failed write (or an exception in the caller's block) leaves the target as it was and
  no temporary file behind. An existing file keeps its permission bits (and, where allowed, its owner and group).
- Every failure is an UnsafeFileError, an OSError whose message names the path.

    read_text(path) / read_bytes(path)      None when the file does not exist
    write_text(path, text) / write_bytes(path, data)    True when the content changed
    copy_file(source, path)                 a copy, streamed
    replacing(path)                         with-block: the path of the temporary file to fill (or to hand to a
                                            tool); it replaces path when the block ends without an exception
    set_attributes(module, path, changed)   a module's owner/group/mode/SELinux options (add_file_common_args)
"""

import contextlib
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


def read_bytes(path):
    """The file's bytes, or None when it does not exist. Never blocks on a FIFO, never follows a symlink."""
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
            return handle.read()
    except UnsafeFileError:
        raise
    except OSError as exc:
        raise UnsafeFileError("%s: cannot read it: %s" % (path, exc.strerror or exc))
    finally:
        if fd is not None:
            os.close(fd)


def read_text(path):
    """The file's text, or None when it does not exist. Never blocks on a FIFO, never follows a symlink."""
    data = read_bytes(path)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeFileError("%s is not UTF-8 text: %s" % (path, exc))


@contextlib.contextmanager
def replacing(path, mode=0o644):
    """Yield the path of a new, empty temporary file beside ``path``; fill it (or let a tool write it). When the
    block ends without an exception it replaces ``path`` in one rename: an existing file keeps its permission
    bits, owner and group, a new one gets ``mode``. On an exception ``path`` is left as it was and the temporary
    file is removed. ``path`` must be missing or a regular file (not a symlink), in an existing directory.
    """
    existing = check_target(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UnsafeFileError("%s: its directory %s does not exist" % (path, directory))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
        os.close(fd)
    except OSError as exc:
        raise UnsafeFileError("%s: cannot create a temporary file in %s: %s"
                              % (path, directory, exc.strerror or exc))
    try:
        yield tmp
        try:
            if existing is not None:
                os.chmod(tmp, stat.S_IMODE(existing.st_mode))
                if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
                    try:
                        os.chown(tmp, existing.st_uid, existing.st_gid)
                    except OSError:
                        pass  # an unprivileged writer cannot give the file away; the mode is still kept
            else:
                os.chmod(tmp, mode)
            check_target(path)  # not turned into a directory, FIFO or symlink meanwhile
            os.replace(tmp, path)
        except UnsafeFileError:
            raise
        except OSError as exc:
            raise UnsafeFileError("%s: cannot write it: %s" % (path, exc.strerror or exc))
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_bytes(path, data, mode=0o644):
    """Replace path with data in one rename; returns True if the content changed (False: nothing written).

    A new file gets mode; an existing regular file keeps its permission bits, owner and group.
    """
    if read_bytes(path) == data:
        return False
    with replacing(path, mode) as tmp:
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise UnsafeFileError("%s: cannot write it: %s" % (path, exc.strerror or exc))
    return True


def write_text(path, text, mode=0o644):
    """Replace path with text (UTF-8) in one rename; returns True if the text changed.

    A new file gets mode; an existing regular file keeps its permission bits, owner and group.
    """
    if read_text(path) == text:
        return False
    return write_bytes(path, text.encode("utf-8"), mode)


def copy_file(source, path, mode=0o644, chunk=4 * 1024 * 1024):
    """Replace path with a copy of the file source (streamed); returns path. UnsafeFileError naming the one that
    failed."""
    with replacing(path, mode) as tmp:
        try:
            source_handle = open(source, "rb")
        except (IOError, OSError) as exc:
            raise UnsafeFileError("%s: cannot read it: %s" % (source, exc.strerror or exc))
        try:
            with source_handle, open(tmp, "wb") as target:
                while True:
                    block = source_handle.read(chunk)
                    if not block:
                        break
                    target.write(block)
        except (IOError, OSError) as exc:
            raise UnsafeFileError("%s: cannot copy %s to it: %s" % (path, source, exc.strerror or exc))
    return path


def set_attributes(module, path, changed=False):
    """Apply a module's file options (owner, group, mode, seuser, serole, setype, selevel, unsafe_writes,
    attributes: AnsibleModule(add_file_common_args=True)) to path; returns changed, or True when they changed
    something. In check mode nothing is touched (a file that would be created is reported by changed already).
    """
    if not os.path.exists(path):
        return changed
    file_args = module.load_file_common_arguments(module.params, path=path)
    return module.set_fs_attributes_if_different(file_args, changed)

"""Write a small text file atomically (temp file in the same directory, then rename). Plain Python 3.9+."""

import os
import tempfile


def read_text(path):
    """The file's text, or None when it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path, "r") as handle:
        return handle.read()


def write_text(path, text, mode=0o644):
    """Replace path with text in one rename, so readers never see half a file; returns True if the text changed."""
    if read_text(path) == text:
        return False
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True

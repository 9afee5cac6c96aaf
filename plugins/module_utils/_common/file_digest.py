# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streamed SHA-256 of a file (bounded memory whatever its size). Plain Python 3.9+."""

import hashlib

_CHUNK = 4 * 1024 * 1024


def sha256_file(path):
    """Hex SHA-256 of the file at path."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()

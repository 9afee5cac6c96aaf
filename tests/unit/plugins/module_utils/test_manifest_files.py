# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""manifest.load()/write(): the manifest path must be a regular file; errors name it and are both ManifestError
and OSError (the modules catch one or the other); an existing manifest keeps its mode."""
import json
import os
import stat

import pytest

from ansible_collections.attestable.ami.plugins.module_utils import manifest

from test_atomic_file import call_without_hanging


@pytest.fixture
def fifo(tmp_path):
    path = str(tmp_path / "manifest.json")
    os.mkfifo(path)
    return path


def test_load_of_a_fifo_fails_at_once_naming_it(fifo):
    with pytest.raises(manifest.ManifestError) as info:
        call_without_hanging(manifest.load, fifo)
    assert fifo in str(info.value) and "FIFO" in str(info.value)
    assert isinstance(info.value, OSError)


def test_write_to_a_fifo_fails_naming_it(fifo):
    with pytest.raises(OSError) as info:
        call_without_hanging(manifest.write, fifo, manifest.new())
    assert fifo in str(info.value) and "FIFO" in str(info.value)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_directory_and_symlink_are_refused(tmp_path):
    directory = tmp_path / "manifest.json"
    directory.mkdir()
    with pytest.raises(manifest.ManifestError, match="is a directory"):
        manifest.load(str(directory))
    with pytest.raises(manifest.ManifestError, match="is a directory"):
        manifest.write(str(directory), manifest.new())
    real = tmp_path / "real.json"
    real.write_text(json.dumps(manifest.new()))
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(manifest.ManifestError, match="symbolic link"):
        manifest.load(str(link))
    with pytest.raises(OSError, match="symbolic link"):
        manifest.write(str(link), {"schema_version": 1, "amis": {"eu-west-1": "ami-0123456789abcdef0"}})
    assert json.loads(real.read_text()) == manifest.new()


def test_write_keeps_the_mode_of_an_existing_manifest(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest.new()))
    os.chmod(str(path), 0o640)
    assert manifest.write(str(path), {"schema_version": 1, "amis": {"eu-west-1": "ami-0123456789abcdef0"}})
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o640
    assert manifest.load(str(path))["amis"] == {"eu-west-1": "ami-0123456789abcdef0"}


def test_missing_directory_names_the_manifest(tmp_path):
    path = str(tmp_path / "gone" / "manifest.json")
    with pytest.raises(OSError) as info:
        manifest.write(path, manifest.new())
    assert path in str(info.value)

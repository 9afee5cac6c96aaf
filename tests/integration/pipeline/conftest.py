# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the pipeline tests: a builder over real SSH (ssh_builder.py)."""
import pytest

from ssh_builder import SkipBuilder, SSHBuilder


@pytest.fixture(scope="module")
def ssh_builder(tmp_path_factory):
    try:
        builder = SSHBuilder(tmp_path_factory.mktemp("ssh-builder")).start()
    except SkipBuilder as exc:
        pytest.fail("the SSH builder cannot run here: %s" % exc)
    try:
        yield builder
    finally:
        builder.stop()

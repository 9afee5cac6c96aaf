# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the describe-and-build tests (helpers live in kiwi_testlib.py)."""
import pytest


@pytest.fixture(scope="module")
def module_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("kiwi")

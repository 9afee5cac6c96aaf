# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the authorize tests."""
import pytest

from authorize_helpers import ADMIN_ROLE, APP_ROLE, Aws


@pytest.fixture
def aws(moto_server):
    """moto with the IAM roles the tests name as principals (the module looks principals up in IAM)."""
    result = Aws(moto_server)
    for role in (APP_ROLE, ADMIN_ROLE):
        result.create_role(role)
    return result

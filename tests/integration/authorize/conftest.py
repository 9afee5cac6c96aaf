"""Fixtures for the authorize tests."""
import pytest

from authorize_helpers import Aws


@pytest.fixture
def aws(moto_server):
    return Aws(moto_server)

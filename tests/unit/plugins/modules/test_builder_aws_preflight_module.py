# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""builder_aws_preflight's AWS reads, one scenario per test, in amazon.aws's unit-test style: the module and the
boto3 clients are MagicMocks (moto runs the module in tests/integration/builder)."""
from unittest.mock import MagicMock

import pytest
from botocore.exceptions import ClientError

from ansible_collections.amazon.aws.plugins.module_utils import cloud
from ansible_collections.attestable.ami.plugins.modules import builder_aws_preflight


def client_error(code, operation):
    return ClientError({"Error": {"Code": code, "Message": "test"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                       operation)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(cloud.time, "sleep", lambda _seconds: None)  # AWSRetry's back-off


def test_throttled_offering_lookup_walks_all_pages_again():
    module = MagicMock()
    pages = module.client.return_value.get_paginator.return_value.paginate.return_value
    pages.build_full_result.side_effect = [
        client_error("Throttling", "DescribeInstanceTypeOfferings"),
        {"InstanceTypeOfferings": [{"Location": "eu-west-1b"}, {"Location": "eu-west-1a"}]}]
    assert builder_aws_preflight.Preflight(module).offered_zones("m6i.large") == ["eu-west-1a", "eu-west-1b"]
    assert pages.build_full_result.call_count == 2


def test_denied_offering_lookup_warns_and_tries_the_subnets_in_order():
    module = MagicMock()
    pages = module.client.return_value.get_paginator.return_value.paginate.return_value
    pages.build_full_result.side_effect = client_error("UnauthorizedOperation", "DescribeInstanceTypeOfferings")
    assert builder_aws_preflight.Preflight(module).offered_zones("m6i.large") is None
    assert pages.build_full_result.call_count == 1  # a denial is not retried
    assert "UnauthorizedOperation" in module.warn.call_args[0][0]

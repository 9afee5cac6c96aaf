# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the builder role tests: boto3 clients on the moto server, and the role's settings for it."""
import os

import boto3
import pytest

from aws_proxy import RecordingProxy

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "playbooks")
REGION = "us-east-1"


@pytest.fixture
def builder_playbook():
    """Path of one of this folder's playbooks."""
    return lambda name: os.path.join(PLAYBOOKS, name)


@pytest.fixture
def ec2(moto_server):
    """A boto3 EC2 client on the moto server (empty at the start of each test)."""
    return boto3.client("ec2", endpoint_url=moto_server, region_name=REGION)


@pytest.fixture
def ssm(moto_server):
    """A boto3 SSM client on the moto server."""
    return boto3.client("ssm", endpoint_url=moto_server, region_name=REGION)


@pytest.fixture
def builder_vars(moto_server):
    """Role settings for launching against moto.

    moto runs no machines: its instances have made-up addresses that nothing answers on, so waiting for the
    connection and installing packages are switched off (the role's documented switches for this case).
    198.51.100.7 (TEST-NET-2) stands for the controller's public address. The upload from the builder (and so the
    instance profile it needs) is switched off here; the tests of those checks switch it on.
    """
    return {
        "builder_aws_region": REGION,
        "builder_aws_endpoint_url": moto_server,
        "builder_ssh_cidr": "198.51.100.7",
        "builder_wait_for_connection": False,
        "builder_install_packages": False,
        "builder_upload_on_builder": False,
    }


@pytest.fixture
def aws_proxy(moto_server):
    """The recording, fault-injecting proxy (tests/integration/aws_proxy.py) in front of the moto server."""
    proxy = RecordingProxy(moto_server)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def iam(moto_server):
    """A boto3 IAM client on the moto server."""
    return boto3.client("iam", endpoint_url=moto_server, region_name=REGION)

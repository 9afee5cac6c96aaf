# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image_register module's decisions, one scenario per test, in amazon.aws's unit-test style: the module
and the boto3 clients are MagicMocks (a real moto server runs the same module in tests/integration/publish)."""
from unittest.mock import MagicMock

import pytest
from botocore.exceptions import ClientError

from ansible_collections.amazon.aws.plugins.module_utils import cloud
from ansible_collections.attestable.ami.plugins.modules import image_register

SNAP = "snap-0123456789abcdef0"
AMI = "ami-0123456789abcdef0"
NAME = "attestable-test-1"


class Failed(Exception):
    def __init__(self, **kwargs):
        super(Failed, self).__init__(kwargs.get("msg"))
        self.result = kwargs


def fail_json(**kwargs):
    raise Failed(**kwargs)


def fail_json_aws(exception, **kwargs):
    raise Failed(exception=exception, **kwargs)


def client_error(code, operation):
    return ClientError({"Error": {"Code": code, "Message": "test"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                       operation)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(cloud.time, "sleep", lambda _seconds: None)  # AWSRetry's back-off


@pytest.fixture
def ec2():
    client = MagicMock()
    client.get_paginator.return_value.paginate.return_value.build_full_result.return_value = {"Images": []}
    client.describe_snapshots.return_value = {"Snapshots": [{"SnapshotId": SNAP, "State": "completed",
                                                             "VolumeSize": 2}]}
    client.register_image.return_value = {"ImageId": AMI}
    client.describe_images.return_value = {"Images": [{"ImageId": AMI, "Tags": []}]}
    return client


def publisher(ec2, check_mode=False, **params):
    module = MagicMock()
    module.check_mode = check_mode
    module.region = "eu-west-1"
    module.params = dict(name=NAME, state="present", snapshot_id=SNAP, architecture="x86_64",
                         root_device_name="/dev/xvda", volume_size=None, volume_type="gp3", boot_mode="uefi",
                         tpm_support="v2.0", ena_support=True, imds_support="v2.0", uefi_data=None, description=None,
                         tags={"Name": "n"}, purge_tags=False, measurements=None, regions=[], launch_permissions=None,
                         delete_snapshots=False, wait=False, wait_timeout=60)
    module.params.update(params)
    module.client.return_value = ec2
    module.fail_json.side_effect = fail_json
    module.fail_json_aws.side_effect = fail_json_aws
    return image_register.Publisher(module)


def existing(snapshot=SNAP, tags=None):
    found = [{"Key": "attestable:SnapshotId", "Value": snapshot}] + [{"Key": k, "Value": v}
                                                                     for k, v in (tags or {}).items()]
    return {"ImageId": AMI, "Name": NAME, "State": "available", "Architecture": "x86_64", "Tags": found}


def test_check_mode_registers_nothing(ec2):
    result = publisher(ec2, check_mode=True).present()
    assert result["changed"] is True and "image_id" not in result
    ec2.register_image.assert_not_called()
    ec2.create_tags.assert_not_called()


def test_new_image_that_cannot_be_tagged_is_deregistered(ec2):
    ec2.create_tags.side_effect = client_error("UnauthorizedOperation", "CreateTags")
    with pytest.raises(Failed) as failed:
        publisher(ec2).present()
    ec2.deregister_image.assert_called_once_with(ImageId=AMI)
    assert "in eu-west-1" in failed.value.result["msg"] and AMI in failed.value.result["msg"]


def test_tagging_a_new_image_retries_not_found(ec2):
    ec2.create_tags.side_effect = [client_error("InvalidAMIID.NotFound", "CreateTags"), {}]
    result = publisher(ec2).present()
    assert result["image_id"] == AMI
    assert ec2.create_tags.call_count == 2
    ec2.deregister_image.assert_not_called()


def test_existing_image_keeps_tags_others_set(ec2):
    ec2.get_paginator.return_value.paginate.return_value.build_full_result.return_value = {
        "Images": [existing(tags={"Name": "n", "Owner": "team"})]}
    result = publisher(ec2).present()
    assert result["changed"] is False
    ec2.create_tags.assert_not_called()
    ec2.delete_tags.assert_not_called()


def test_purge_tags_removes_unlisted_tags_only(ec2):
    ec2.get_paginator.return_value.paginate.return_value.build_full_result.return_value = {
        "Images": [existing(tags={"Name": "n", "Owner": "team", "aws:backup": "x"})]}
    result = publisher(ec2, purge_tags=True).present()
    assert result["changed"] is True
    ec2.delete_tags.assert_called_once_with(Resources=[AMI], Tags=[{"Key": "Owner"}])
    ec2.create_tags.assert_not_called()


def test_purge_tags_in_check_mode_removes_nothing(ec2):
    ec2.get_paginator.return_value.paginate.return_value.build_full_result.return_value = {
        "Images": [existing(tags={"Name": "n", "Owner": "team"})]}
    result = publisher(ec2, check_mode=True, purge_tags=True).present()
    assert result["changed"] is True
    ec2.delete_tags.assert_not_called()


def test_existing_image_of_another_snapshot_fails_and_suggests_a_name(ec2):
    ec2.get_paginator.return_value.paginate.return_value.build_full_result.return_value = {
        "Images": [existing(snapshot="snap-0fedcba9876543210", tags={"Name": "n"})]}
    with pytest.raises(Failed) as failed:
        publisher(ec2).present()
    assert "%s-0123456789abcdef0" % NAME in failed.value.result["msg"]
    ec2.register_image.assert_not_called()
    ec2.deregister_image.assert_not_called()


def test_number_and_boolean_tags_are_text_on_a_new_image(ec2):
    publisher(ec2, tags={"Build": 42, "Signed": True}).present()
    sent = ec2.register_image.call_args[1]["TagSpecifications"][0]["Tags"]
    assert {"Key": "Build", "Value": "42"} in sent and {"Key": "Signed", "Value": "True"} in sent


def test_failed_lookup_names_the_region(ec2):
    ec2.get_paginator.return_value.paginate.return_value.build_full_result.side_effect = client_error(
        "UnauthorizedOperation", "DescribeImages")
    with pytest.raises(Failed) as failed:
        publisher(ec2).present()
    assert failed.value.result["msg"] == "Failed to look up AMI %r in eu-west-1" % NAME
    assert isinstance(failed.value.result["exception"], ClientError)

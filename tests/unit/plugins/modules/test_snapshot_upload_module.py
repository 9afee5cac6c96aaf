# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The snapshot_upload module's decisions, one scenario per test, in amazon.aws's unit-test style: the module
and the boto3 clients are MagicMocks (a real moto server runs the same module in tests/integration/publish)."""
import hashlib
from unittest.mock import MagicMock, patch

import pytest
from botocore.exceptions import ClientError

from ansible_collections.amazon.aws.plugins.module_utils import cloud
from ansible_collections.attestable.ami.plugins.module_utils._aws import ebs_upload
from ansible_collections.attestable.ami.plugins.modules import snapshot_upload

MODULE = "ansible_collections.attestable.ami.plugins.modules.snapshot_upload"
SNAP = "snap-0123456789abcdef0"


class Exited(Exception):
    def __init__(self, **kwargs):
        super(Exited, self).__init__(kwargs.get("msg"))
        self.result = kwargs


class Failed(Exited):
    pass


def fail_json(**kwargs):
    raise Failed(**kwargs)


def fail_json_aws(exception, **kwargs):
    raise Failed(exception=exception, **kwargs)


def exit_json(**kwargs):
    raise Exited(**kwargs)


def client_error(code, operation="CreateTags"):
    return ClientError({"Error": {"Code": code, "Message": "test"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                       operation)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(cloud.time, "sleep", lambda _seconds: None)  # AWSRetry's back-off


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.raw"
    data = b"attestable" * 1000 + bytes(ebs_upload.BLOCK_SIZE)
    path.write_bytes(data)
    return {"path": str(path), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def make_module(image, check_mode=False, **params):
    module = MagicMock()
    module.check_mode = check_mode
    module._diff = False
    module.params = dict(src=image["path"], image_sha256=None, volume_size=None, description=None, tags=None,
                         purge_tags=False, encrypted=False, kms_key_id=None, workers=2, reuse="sample",
                         reuse_sample_blocks=64, consistency_timeout=120, wait=False, wait_timeout=60)
    module.params.update(params)
    module.fail_json.side_effect = fail_json
    module.fail_json_aws.side_effect = fail_json_aws
    module.exit_json.side_effect = exit_json
    return module


def snapshots_found(ec2, snapshots):
    ec2.get_paginator.return_value.paginate.return_value.build_full_result.return_value = {"Snapshots": snapshots}


def run_main(module):
    with patch(MODULE + ".AnsibleAWSModule", return_value=module):
        with pytest.raises(Exited) as exited:
            snapshot_upload.main()
    return exited.value


def test_check_mode_with_no_earlier_upload_hashes_and_uploads_nothing(image):
    module = make_module(image, check_mode=True)
    ec2 = MagicMock()
    module.client.return_value = ec2
    snapshots_found(ec2, [])
    with patch.object(ebs_upload, "upload_image") as upload_image:
        result = run_main(module)
    assert not isinstance(result, Failed)
    assert result.result["changed"] is True
    assert result.result["image_sha256"] == image["sha256"]
    assert "snapshot_id" not in result.result
    upload_image.assert_not_called()
    assert [c[0][0] for c in module.client.call_args_list] == ["ec2"]  # no EBS client: nothing is sent


def test_check_mode_reused_snapshot_missing_a_tag_is_changed_but_not_tagged(image):
    module = make_module(image, check_mode=True, tags={"Name": "n"}, image_sha256=image["sha256"])
    ec2 = MagicMock()
    module.client.return_value = ec2
    snapshots_found(ec2, [{"SnapshotId": SNAP, "State": "completed", "VolumeSize": 1,
                           "Tags": [{"Key": ebs_upload.SHA256_TAG, "Value": image["sha256"]},
                                    {"Key": ebs_upload.SIZE_TAG, "Value": str(image["size"])}]}])
    with patch.object(ebs_upload, "verify_snapshot", return_value=("", 2)):
        result = run_main(module)
    assert result.result["changed"] is True and result.result["snapshot_id"] == SNAP
    assert result.result["verified_blocks"] == 2
    ec2.create_tags.assert_not_called()
    ec2.delete_tags.assert_not_called()


def test_reused_snapshot_with_its_tags_is_not_changed(image):
    module = make_module(image, tags={"Name": "n", "Build": 42}, image_sha256=image["sha256"])
    ec2 = MagicMock()
    module.client.return_value = ec2
    snapshots_found(ec2, [{"SnapshotId": SNAP, "State": "completed", "VolumeSize": 1,
                           "Tags": [{"Key": ebs_upload.SHA256_TAG, "Value": image["sha256"]},
                                    {"Key": ebs_upload.SIZE_TAG, "Value": str(image["size"])},
                                    {"Key": "Name", "Value": "n"}, {"Key": "Build", "Value": "42"}]}])
    with patch.object(ebs_upload, "verify_snapshot", return_value=("", 2)), \
            patch.object(ebs_upload, "upload_image") as upload_image:
        result = run_main(module)
    assert result.result["changed"] is False  # 42 and "42" are the same tag value
    upload_image.assert_not_called()
    ec2.create_tags.assert_not_called()


def test_purge_tags_removes_unlisted_tags_but_never_the_image_identity():
    current = {ebs_upload.SHA256_TAG: "ab" * 32, ebs_upload.SIZE_TAG: "10", "Old": "x", "aws:backup": "y",
               "Name": "old"}
    identity = {ebs_upload.SHA256_TAG: "ab" * 32, ebs_upload.SIZE_TAG: "10"}
    to_set, to_unset = snapshot_upload.tag_changes(current, {"Name": "new", "Signed": True}, identity, True)
    assert to_set == {"Name": "new", "Signed": True}
    assert sorted(to_unset) == ["Old"]


def test_without_purge_tags_unlisted_tags_stay():
    current = {ebs_upload.SHA256_TAG: "ab" * 32, "Old": "x"}
    to_set, to_unset = snapshot_upload.tag_changes(current, {"Name": "n"}, {ebs_upload.SHA256_TAG: "ab" * 32}, False)
    assert to_set == {"Name": "n"} and to_unset == []


def test_tags_not_given_change_nothing_even_with_purge():
    assert snapshot_upload.tag_changes({"Old": "x"}, None, {}, True) == ({}, [])


def test_number_and_boolean_tags_reach_start_snapshot_as_text(image):
    module = make_module(image, tags={"Build": 42, "Signed": True})
    ec2 = MagicMock()
    ebs = MagicMock()
    ebs.start_snapshot.return_value = {"SnapshotId": SNAP}
    ebs.complete_snapshot.return_value = {"Status": "pending"}
    module.client.side_effect = lambda service, **_kw: ebs if service == "ebs" else ec2
    snapshot_upload.upload(module, ec2, image["size"], None, 1)
    assert ebs.start_snapshot.call_args[1]["Tags"] == [{"Key": "Build", "Value": "42"},
                                                       {"Key": "Signed", "Value": "True"}]
    assert ec2.create_tags.call_args[1]["Tags"] == [{"Key": ebs_upload.SHA256_TAG, "Value": image["sha256"]},
                                                    {"Key": ebs_upload.SIZE_TAG, "Value": str(image["size"])}]


def test_failed_upload_fails_with_the_snapshot_id(image):
    module = make_module(image)
    error = ebs_upload.UploadError("PutSnapshotBlock of block 0 failed; the incomplete snapshot was deleted",
                                   snapshot_id=SNAP)
    with patch.object(ebs_upload, "upload_image", side_effect=error):
        with pytest.raises(Failed) as failed:
            snapshot_upload.upload(module, MagicMock(), image["size"], None, 1)
    assert failed.value.result["snapshot_id"] == SNAP
    assert "was deleted" in failed.value.result["msg"]


def test_tagging_failure_after_upload_deletes_the_new_snapshot(image):
    module = make_module(image)
    ec2 = MagicMock()
    ec2.create_tags.side_effect = client_error("UnauthorizedOperation")
    with patch.object(ebs_upload, "upload_image", return_value={"snapshot_id": SNAP, "image_sha256": "ab" * 32}):
        with pytest.raises(Failed) as failed:
            snapshot_upload.upload(module, ec2, image["size"], None, 1)
    ec2.delete_snapshot.assert_called_once_with(SnapshotId=SNAP)
    assert failed.value.result["msg"] == "Failed to tag snapshot %s with the image digest; it was deleted" % SNAP


def test_tagging_and_deleting_failing_names_the_snapshot_to_delete_by_hand(image):
    module = make_module(image)
    ec2 = MagicMock()
    ec2.create_tags.side_effect = client_error("UnauthorizedOperation")
    ec2.delete_snapshot.side_effect = client_error("UnauthorizedOperation", "DeleteSnapshot")
    with patch.object(ebs_upload, "upload_image", return_value={"snapshot_id": SNAP, "image_sha256": "ab" * 32}):
        with pytest.raises(Failed) as failed:
            snapshot_upload.upload(module, ec2, image["size"], None, 1)
    assert "delete snapshot %s by hand" % SNAP in failed.value.result["msg"]
    assert "UnauthorizedOperation" in failed.value.result["msg"]


def test_a_snapshot_already_gone_counts_as_deleted():
    ec2 = MagicMock()
    ec2.delete_snapshot.side_effect = client_error("InvalidSnapshot.NotFound", "DeleteSnapshot")
    assert snapshot_upload.delete_snapshot_quietly(ec2, SNAP) is None


def test_throttled_snapshot_lookup_walks_all_pages_again():
    ec2 = MagicMock()
    pages = ec2.get_paginator.return_value.paginate.return_value
    pages.build_full_result.side_effect = [client_error("RequestLimitExceeded", "DescribeSnapshots"),
                                           {"Snapshots": [{"SnapshotId": SNAP}]}]
    assert snapshot_upload.describe_all_snapshots(ec2, OwnerIds=["self"]) == [{"SnapshotId": SNAP}]
    assert pages.build_full_result.call_count == 2


def test_interrupt_during_upload_is_not_turned_into_a_module_failure(image):
    module = make_module(image)
    with patch.object(ebs_upload, "upload_image", side_effect=KeyboardInterrupt()):
        with pytest.raises(KeyboardInterrupt):
            snapshot_upload.upload(module, MagicMock(), image["size"], None, 1)
    module.fail_json.assert_not_called()
    module.fail_json_aws.assert_not_called()

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""snapshot_upload against a real moto server over HTTP (through the recording, fault-injecting proxy)."""
import base64
import hashlib
import os
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

UPLOAD = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Upload the image
      attestable.ami.snapshot_upload:
        src: "{{ src }}"
        region: us-east-1
        endpoint_url: "{{ endpoint }}"
        workers: "{{ workers | default(4) }}"
        description: test image
        tags:
          Name: publish-test
      register: upload
"""


def _upload(run_playbook, endpoint, src, **extra):
    variables = {"src": src, "endpoint": endpoint}
    variables.update(extra)
    return run_playbook(UPLOAD, extra_vars=variables)


def test_sparse_image_round_trips_block_by_block(run_playbook, aws_proxy, aws, sparse_image, read_back):
    before = aws.snapshot_ids()
    checked = run_playbook(UPLOAD, extra_vars={"src": sparse_image["path"], "endpoint": aws_proxy.url}, check=True)
    assert checked.rc == 0, checked.stdout
    assert checked.task("Upload the image")["changed"] is True
    assert checked.task("Upload the image")["image_sha256"] == sparse_image["sha256"]
    assert aws_proxy.block_puts() == [] and aws.snapshot_ids() == before

    first = _upload(run_playbook, aws_proxy.url, sparse_image["path"])
    assert first.rc == 0, first.stdout
    result = first.task("Upload the image")
    assert result["changed"] is True
    assert result["image_sha256"] == sparse_image["sha256"]
    assert result["volume_size"] == 1
    assert result["blocks_total"] == 11
    assert result["blocks_written"] == len(sparse_image["nonzero_blocks"])
    assert result["blocks_skipped"] == 11 - len(sparse_image["nonzero_blocks"])
    assert result["bytes_uploaded"] == len(sparse_image["nonzero_blocks"]) * 512 * 1024

    # Only the non-zero blocks went over the wire, each exactly once.
    sent = sorted(int(p.rsplit("/", 1)[1]) for p in aws_proxy.block_puts())
    assert sent == sparse_image["nonzero_blocks"]

    data, written = read_back(aws.client("ebs"), result["snapshot_id"], sparse_image["size"])
    assert written == sparse_image["nonzero_blocks"]
    assert hashlib.sha256(data).hexdigest() == sparse_image["sha256"]

    snap = aws.client("ec2").describe_snapshots(SnapshotIds=[result["snapshot_id"]])["Snapshots"][0]
    tags = dict((t["Key"], t["Value"]) for t in snap["Tags"])
    assert tags["attestable:ImageSHA256"] == sparse_image["sha256"]
    assert tags["attestable:ImageSize"] == str(sparse_image["size"])
    assert tags["Name"] == "publish-test"

    aws_proxy.clear()
    second = _upload(run_playbook, aws_proxy.url, sparse_image["path"])
    assert second.rc == 0, second.stdout
    again = second.task("Upload the image")
    assert again["changed"] is False
    assert again["snapshot_id"] == result["snapshot_id"]
    assert again["blocks_written"] == 0
    assert aws_proxy.block_puts() == []

    # Same size, one byte different: a new snapshot, not the old one.
    with open(sparse_image["path"], "r+b") as handle:
        handle.seek(2 * 512 * 1024 + 7)
        handle.write(b"\x01")
    changed = _upload(run_playbook, aws_proxy.url, sparse_image["path"])
    assert changed.rc == 0, changed.stdout
    third = changed.task("Upload the image")
    assert third["changed"] is True and third["snapshot_id"] != result["snapshot_id"]
    assert third["image_sha256"] != sparse_image["sha256"]
    assert third["blocks_written"] == len(sparse_image["nonzero_blocks"]) + 1


def test_throttling_and_5xx_are_retried_per_block(run_playbook, aws_proxy, aws, sparse_image, read_back):
    # Block 0: throttled once; block 3: two 503s; block 10 (the short last block): one 500.
    aws_proxy.inject(r"^PUT /snapshots/[^/]+/blocks/0$", [(400, "ThrottlingException")])
    aws_proxy.inject(r"^PUT /snapshots/[^/]+/blocks/3$", [(503, "ServiceUnavailableException")] * 2)
    aws_proxy.inject(r"^PUT /snapshots/[^/]+/blocks/10$", [(500, "InternalServerException")])
    run = _upload(run_playbook, aws_proxy.url, sparse_image["path"], workers=3)
    assert run.rc == 0, run.stdout
    result = run.task("Upload the image")
    assert result["retries"] == 4
    puts = [int(p.rsplit("/", 1)[1]) for p in aws_proxy.block_puts()]
    assert sorted(puts) == [0, 0, 3, 3, 3, 4, 10, 10]
    data, written = read_back(aws.client("ebs"), result["snapshot_id"], sparse_image["size"])
    assert hashlib.sha256(data).hexdigest() == sparse_image["sha256"]
    assert written == sparse_image["nonzero_blocks"]


def test_unrecoverable_block_error_leaves_no_snapshot(run_playbook, aws_proxy, aws, sparse_image):
    before = aws.snapshot_ids()
    rule = aws_proxy.inject(r"^PUT /snapshots/[^/]+/blocks/4$", [(503, "ServiceUnavailableException")], forever=True)
    run = _upload(run_playbook, aws_proxy.url, sparse_image["path"], workers=2)
    assert run.rc != 0
    msg = run.task("Upload the image")["msg"]
    assert "PutSnapshotBlock of block 4 failed after 6 attempts" in msg
    assert "was deleted" in msg
    assert rule.hits == 6
    assert aws.snapshot_ids() == before
    assert aws_proxy.calls("DeleteSnapshot")


def test_access_denied_is_not_retried_and_cleans_up(run_playbook, aws_proxy, aws, sparse_image):
    before = aws.snapshot_ids()
    rule = aws_proxy.inject(r"^PUT /snapshots/[^/]+/blocks/3$", [(403, "AccessDeniedException")], forever=True)
    run = _upload(run_playbook, aws_proxy.url, sparse_image["path"], workers=1)
    assert run.rc != 0
    msg = run.task("Upload the image")["msg"]
    assert "PutSnapshotBlock of block 3 failed: AccessDeniedException" in msg
    assert rule.hits == 1
    assert aws.snapshot_ids() == before


def test_bad_sources_fail_clearly_and_create_nothing(run_playbook, aws_proxy, aws, tmp_path):
    before = aws.snapshot_ids()
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    playbook = """
    - hosts: localhost
      gather_facts: false
      tasks:
        - name: Upload a missing image
          attestable.ami.snapshot_upload:
            src: "{{ missing }}"
            region: us-east-1
            endpoint_url: "{{ endpoint }}"
          ignore_errors: true
        - name: Upload an empty image
          attestable.ami.snapshot_upload:
            src: "{{ empty }}"
            region: us-east-1
            endpoint_url: "{{ endpoint }}"
          ignore_errors: true
        - name: Upload a directory
          attestable.ami.snapshot_upload:
            src: "{{ directory }}"
            region: us-east-1
            endpoint_url: "{{ endpoint }}"
          ignore_errors: true
        - name: Upload into a volume too small
          attestable.ami.snapshot_upload:
            src: "{{ big }}"
            volume_size: 1
            region: us-east-1
            endpoint_url: "{{ endpoint }}"
          ignore_errors: true
    """
    big = tmp_path / "big.raw"
    with open(str(big), "wb") as handle:
        handle.truncate(1024 ** 3 + 1)
    run = run_playbook(playbook, extra_vars={"missing": str(tmp_path / "nope.raw"), "empty": str(empty),
                                             "directory": str(tmp_path), "big": str(big),
                                             "endpoint": aws_proxy.url})
    assert "src: cannot read the disk image %s" % (tmp_path / "nope.raw") in run.task("Upload a missing image")["msg"]
    assert "is empty (0 bytes)" in run.task("Upload an empty image")["msg"]
    assert "is not a regular file or block device" in run.task("Upload a directory")["msg"]
    assert "volume_size: 1 GiB cannot hold" in run.task("Upload into a volume too small")["msg"]
    for name in run.results:
        assert run.task(name)["failed"] is True
        assert "Traceback" not in run.task(name).get("module_stderr", "")
    assert aws_proxy.requests == []  # nothing reached AWS at all
    assert aws.snapshot_ids() == before


def test_upload_runs_on_python39_like_the_al2023_builder(run_playbook, aws_proxy, aws, sparse_image, read_back):
    # .venv39 (Python 3.9 + boto3, like AL2023's python3 + python3-boto3) is made by `scripts/test.sh py39`.
    python39 = os.path.join(ROOT, ".venv39", "bin", "python")
    if not os.path.exists(python39):
        pytest.skip("no .venv39: run scripts/test.sh py39 first")
    run = _upload(run_playbook, aws_proxy.url, sparse_image["path"], ansible_python_interpreter=python39)
    assert run.rc == 0, run.stdout
    result = run.task("Upload the image")
    assert result["changed"] is True and result["blocks_written"] == len(sparse_image["nonzero_blocks"])
    data = read_back(aws.client("ebs"), result["snapshot_id"], sparse_image["size"])[0]
    assert hashlib.sha256(data).hexdigest() == sparse_image["sha256"]


# ---- issue 8 section 2 and issue 13: what the module trusts, eventual consistency, cleanup

BLOCK = 512 * 1024
NEW_SNAPSHOT = r"^POST /snapshots$"
SNAPSHOT_ID = r'"SnapshotId":\s*"(snap-[0-9a-f]+)"'


NEW_KEYS = ("attestable:ImageSHA256", "attestable:ImageSize")
LEGACY_KEYS = ("attestable:image-sha256", "attestable:image-size")  # written before the tag keys were unified


def _forge_snapshot(aws, image, blocks, keys=NEW_KEYS):
    """A snapshot made straight on moto holding `blocks` ({index: bytes}) and tagged as if it were an upload
    of `image` - what anyone with ebs:StartSnapshot and ec2:CreateTags in the account could do."""
    ebs = aws.client("ebs")
    snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    for index, data in sorted(blocks.items()):
        data = data.ljust(BLOCK, b"\0")
        ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=index, BlockData=data, DataLength=BLOCK,
                               Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                               ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(blocks))
    aws.client("ec2").create_tags(Resources=[snap], Tags=[
        {"Key": keys[0], "Value": image["sha256"]},
        {"Key": keys[1], "Value": str(image["size"])}])
    return snap


def _image_blocks(image):
    with open(image["path"], "rb") as handle:
        data = handle.read()
    return dict((i, data[i * BLOCK:(i + 1) * BLOCK]) for i in image["nonzero_blocks"])


@pytest.mark.parametrize("keys", [NEW_KEYS, LEGACY_KEYS], ids=["tag keys", "legacy tag keys"])
@pytest.mark.parametrize("forgery", ["one block altered", "one block missing"])
def test_tags_alone_do_not_make_a_snapshot_reused(run_playbook, aws_proxy, aws, sparse_image, read_back, forgery,
                                                  keys):
    blocks = _image_blocks(sparse_image)
    if forgery == "one block altered":
        blocks[3] = blocks[3][:100] + b"\xff" + blocks[3][101:]
    else:
        del blocks[10]
    forged = _forge_snapshot(aws, sparse_image, blocks, keys)
    run = _upload(run_playbook, aws_proxy.url, sparse_image["path"])
    assert run.rc == 0, run.stdout
    result = run.task("Upload the image")
    assert result["changed"] is True and result["snapshot_id"] != forged
    assert [r["snapshot_id"] for r in result["reuse_rejected"]] == [forged]
    reason = result["reuse_rejected"][0]["reason"]
    assert ("block 3 differs" in reason) if forgery == "one block altered" else ("missing [10]" in reason)
    assert any(forged in w and "not reused" in w for w in result.get("warnings", []))
    assert result["blocks_written"] == len(sparse_image["nonzero_blocks"])
    data = read_back(aws.client("ebs"), result["snapshot_id"], sparse_image["size"])[0]
    assert hashlib.sha256(data).hexdigest() == sparse_image["sha256"]
    assert forged in aws.snapshot_ids()  # not ours to delete


def test_a_verified_snapshot_is_reused_and_never_mode_uploads(run_playbook, aws_proxy, aws, sparse_image):
    genuine = _forge_snapshot(aws, sparse_image, _image_blocks(sparse_image))  # right content, made elsewhere
    run = _upload(run_playbook, aws_proxy.url, sparse_image["path"])
    assert run.rc == 0, run.stdout
    result = run.task("Upload the image")
    assert result["changed"] is True  # only the Name tag was added
    assert result["snapshot_id"] == genuine and result["blocks_written"] == 0
    assert result["verified_blocks"] == len(sparse_image["nonzero_blocks"]) and result["reuse_rejected"] == []
    assert aws_proxy.block_puts() == []
    read = [r["path"] for r in aws_proxy.requests if r["method"] == "GET" and "/blocks/" in r["path"]]
    assert sorted(int(p.split("?")[0].rsplit("/", 1)[1]) for p in read) == sparse_image["nonzero_blocks"]

    never = run_playbook(UPLOAD.replace("workers: ", "reuse: never\n        workers: "),
                         extra_vars={"src": sparse_image["path"], "endpoint": aws_proxy.url})
    assert never.rc == 0, never.stdout
    assert never.task("Upload the image")["snapshot_id"] != genuine
    assert never.task("Upload the image")["blocks_written"] == len(sparse_image["nonzero_blocks"])


def test_number_and_boolean_tag_values(run_playbook, aws_proxy, aws, sparse_image):
    playbook = UPLOAD.replace("Name: publish-test", "Name: publish-test\n          Build: 42\n          Signed: true")
    first = run_playbook(playbook, extra_vars={"src": sparse_image["path"], "endpoint": aws_proxy.url})
    assert first.rc == 0, first.stdout
    snapshot_id = first.task("Upload the image")["snapshot_id"]
    snap = aws.client("ec2").describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    tags = dict((t["Key"], t["Value"]) for t in snap["Tags"])
    assert tags["Build"] == "42" and tags["Signed"] == "True"
    again = run_playbook(playbook, extra_vars={"src": sparse_image["path"], "endpoint": aws_proxy.url})
    assert again.rc == 0, again.stdout
    assert again.task("Upload the image")["changed"] is False
    assert again.task("Upload the image")["snapshot_id"] == snapshot_id


def test_failed_tagging_with_failed_cleanup_names_the_snapshot(run_playbook, aws_proxy, aws, sparse_image):
    aws_proxy.inject(r"Action=CreateTags$", [(403, "UnauthorizedOperation")], forever=True)
    aws_proxy.inject(r"Action=DeleteSnapshot$", [(403, "UnauthorizedOperation")], forever=True)
    before = aws.snapshot_ids()
    run = _upload(run_playbook, aws_proxy.url, sparse_image["path"])
    assert run.rc != 0
    result = run.task("Upload the image")
    left = aws.snapshot_ids() - before
    assert len(left) == 1
    snapshot_id = left.pop()
    assert "Traceback" not in result.get("module_stderr", "") and "module_stderr" not in result
    assert "deleting it failed too" in result["msg"] and "delete snapshot %s by hand" % snapshot_id in result["msg"]
    assert result["snapshot_id"] == snapshot_id


def test_new_snapshot_not_found_answers_are_retried(run_playbook, aws_proxy, aws, sparse_image, read_back):
    # EBS direct APIs: 404 for the first PutSnapshotBlock/CompleteSnapshot calls on the new snapshot (coldsnap #43);
    # EC2: InvalidSnapshot.NotFound for the first CreateTags and DescribeSnapshots (tagging and waiting).
    ebs_rule = aws_proxy.fail_new(NEW_SNAPSHOT, SNAPSHOT_ID, r"^(PUT /snapshots/|POST /snapshots/completion/)",
                                  "ResourceNotFoundException", count=5, status=404)
    tag_rule = aws_proxy.fail_new(NEW_SNAPSHOT, SNAPSHOT_ID, r"Action=CreateTags$", "InvalidSnapshot.NotFound", 2)
    wait_rule = aws_proxy.fail_new(NEW_SNAPSHOT, SNAPSHOT_ID, r"Action=DescribeSnapshots$",
                                   "InvalidSnapshot.NotFound", 2)
    run = _upload(run_playbook, aws_proxy.url, sparse_image["path"], workers=2)
    assert run.rc == 0, run.stdout
    result = run.task("Upload the image")
    assert (ebs_rule.hits, tag_rule.hits, wait_rule.hits) == (5, 2, 2)
    assert result["retries"] >= 5
    assert aws_proxy.calls("DeleteSnapshot") == []
    data = read_back(aws.client("ebs"), result["snapshot_id"], sparse_image["size"])[0]
    assert hashlib.sha256(data).hexdigest() == sparse_image["sha256"]
    snap = aws.client("ec2").describe_snapshots(SnapshotIds=[result["snapshot_id"]])["Snapshots"][0]
    assert dict((t["Key"], t["Value"]) for t in snap["Tags"])["attestable:ImageSHA256"] == sparse_image["sha256"]


def test_new_snapshot_not_found_retries_stop_at_the_window(run_playbook, aws_proxy, aws, sparse_image):
    before = aws.snapshot_ids()
    rule = aws_proxy.fail_new(NEW_SNAPSHOT, SNAPSHOT_ID, r"^(PUT /snapshots/|POST /snapshots/completion/)",
                              "ResourceNotFoundException", count=10 ** 6, status=404)
    playbook = UPLOAD.replace("workers: ", "consistency_timeout: 3\n        workers: ")
    started = time.time()
    run = run_playbook(playbook, extra_vars={"src": sparse_image["path"], "endpoint": aws_proxy.url, "workers": 1})
    assert run.rc != 0
    msg = run.task("Upload the image")["msg"]
    assert "still did not exist 3 seconds after StartSnapshot" in msg and "was deleted" in msg
    assert rule.hits >= 2
    assert time.time() - started < 120  # bounded by the window, not by the default two minutes
    assert aws.snapshot_ids() == before


def test_a_snapshot_that_cannot_be_read_back_is_not_reused(run_playbook, aws_proxy, aws, sparse_image):
    # A builder role without ebs:ListSnapshotBlocks: the tagged snapshot cannot be verified, so it is not trusted.
    tagged = _forge_snapshot(aws, sparse_image, _image_blocks(sparse_image))
    aws_proxy.inject(r"^GET /snapshots/[^/]+/blocks$", [(403, "AccessDeniedException")], forever=True)
    run = _upload(run_playbook, aws_proxy.url, sparse_image["path"])
    assert run.rc == 0, run.stdout
    result = run.task("Upload the image")
    assert result["snapshot_id"] != tagged and result["blocks_written"] == len(sparse_image["nonzero_blocks"])
    assert result["reuse_rejected"][0]["snapshot_id"] == tagged
    assert "could not be read back" in result["reuse_rejected"][0]["reason"]
    assert "AccessDeniedException" in result["reuse_rejected"][0]["reason"]


def test_purge_tags_removes_other_tags_of_a_reused_snapshot_but_not_its_identity(
        run_playbook, aws_proxy, aws, sparse_image):
    first = _upload(run_playbook, aws_proxy.url, sparse_image["path"])
    assert first.rc == 0, first.stdout
    snapshot_id = first.task("Upload the image")["snapshot_id"]
    ec2 = aws.client("ec2")
    ec2.create_tags(Resources=[snapshot_id], Tags=[{"Key": "Old", "Value": "x"}])

    def tags():
        snap = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        return dict((t["Key"], t["Value"]) for t in snap["Tags"])

    kept = _upload(run_playbook, aws_proxy.url, sparse_image["path"])  # purge_tags defaults to false
    assert kept.rc == 0, kept.stdout
    assert kept.task("Upload the image")["changed"] is False and tags()["Old"] == "x"

    purging = UPLOAD.replace("workers: ", "purge_tags: true\n        workers: ")
    checked = run_playbook(purging, extra_vars={"src": sparse_image["path"], "endpoint": aws_proxy.url}, check=True)
    assert checked.rc == 0, checked.stdout
    assert checked.task("Upload the image")["changed"] is True and tags()["Old"] == "x"

    purged = run_playbook(purging, extra_vars={"src": sparse_image["path"], "endpoint": aws_proxy.url})
    assert purged.rc == 0, purged.stdout
    result = purged.task("Upload the image")
    assert result["changed"] is True and result["snapshot_id"] == snapshot_id and result["blocks_written"] == 0
    assert tags() == {"Name": "publish-test", "attestable:ImageSHA256": sparse_image["sha256"],
                      "attestable:ImageSize": str(sparse_image["size"])}


def test_a_snapshot_tagged_with_the_legacy_keys_is_reused_once_it_verifies(run_playbook, aws_proxy, aws, sparse_image):
    # An upload made before the tag keys were unified: the same content, tagged attestable:image-sha256/-size.
    earlier = _forge_snapshot(aws, sparse_image, _image_blocks(sparse_image), LEGACY_KEYS)
    run = _upload(run_playbook, aws_proxy.url, sparse_image["path"])
    assert run.rc == 0, run.stdout
    result = run.task("Upload the image")
    assert result["snapshot_id"] == earlier and not result.get("reuse_rejected")
    assert aws_proxy.block_puts() == []
    assert not [r for r in aws_proxy.requests if r["method"] == "POST" and r["path"] == "/snapshots"]

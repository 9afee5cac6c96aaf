"""snapshot_upload against a real moto server over HTTP (through the recording, fault-injecting proxy)."""
import hashlib
import os

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
    assert tags["attestable:image-sha256"] == sparse_image["sha256"]
    assert tags["attestable:image-size"] == str(sparse_image["size"])
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

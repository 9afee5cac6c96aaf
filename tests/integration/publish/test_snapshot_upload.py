"""snapshot_upload against a real moto server over HTTP (through the recording, fault-injecting proxy)."""
import hashlib

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
    assert tags["Name"] == "publish-test"

    aws_proxy.clear()
    second = _upload(run_playbook, aws_proxy.url, sparse_image["path"])
    assert second.rc == 0, second.stdout
    again = second.task("Upload the image")
    assert again["changed"] is False
    assert again["snapshot_id"] == result["snapshot_id"]
    assert again["blocks_written"] == 0
    assert aws_proxy.block_puts() == []

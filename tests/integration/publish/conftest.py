# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the publish tests: a recording, fault-injecting HTTP proxy in front of the moto server,
boto3 clients for checking what ended up in moto, and sparse raw images.

The proxy (tests/integration/aws_proxy.py) lets tests check what a module *sent* where moto drops fields
(RegisterImage's TpmSupport, BootMode, ImdsSupport, BlockDeviceMappings), answers chosen requests with
throttling or 5xx errors instead of forwarding them, answers "not found" for the first requests on a new
resource (eventual consistency), and (emulate_images) gives DescribeImages the attributes moto drops.
"""
import hashlib

import boto3
import pytest

from aws_proxy import RecordingProxy

BLOCK = 512 * 1024


@pytest.fixture
def aws_proxy(moto_server):
    proxy = RecordingProxy(moto_server, emulate_images=True)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def aws(moto_server):
    """boto3 clients straight to moto (not through the proxy), for checking results."""

    class Clients(object):
        url = moto_server

        def client(self, service, region="us-east-1"):
            return boto3.client(service, region_name=region, endpoint_url=moto_server)

        def snapshot_ids(self, region="us-east-1"):
            ec2 = self.client("ec2", region)
            pages = ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"])
            return set(s["SnapshotId"] for page in pages for s in page["Snapshots"])

        def image_ids(self, region="us-east-1"):
            ec2 = self.client("ec2", region)
            return set(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"])

    return Clients()


def write_sparse_image(path, size, regions, seed=b"attestable"):
    """A raw image of `size` bytes: zeros except pseudo-random data at the (offset, length) regions."""
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, length in regions:
            handle.seek(offset)
            data = b""
            counter = 0
            while len(data) < length:
                data += hashlib.sha256(seed + str(offset).encode() + str(counter).encode()).digest()
                counter += 1
            handle.write(data[:length])
    return path


def read_snapshot(ebs, snapshot_id, size):
    """Reassemble `size` bytes of a snapshot block by block (unwritten blocks read as zeros)."""
    blocks = {}
    kwargs = {"SnapshotId": snapshot_id}
    while True:
        page = ebs.list_snapshot_blocks(**kwargs)
        for block in page["Blocks"]:
            blocks[block["BlockIndex"]] = block["BlockToken"]
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    out = bytearray(size + BLOCK)
    for index, token in blocks.items():
        data = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=token)["BlockData"].read()
        out[index * BLOCK:index * BLOCK + len(data)] = data
    return bytes(out[:size]), sorted(blocks)


@pytest.fixture
def sparse_image(tmp_path):
    """5 MiB + 1234 bytes, mostly zeros: data in blocks 0, 3 (straddling into 4), and the short last block."""
    size = 5 * 1024 * 1024 + 1234
    regions = [(100, 4000), (3 * BLOCK + BLOCK - 700, 1500), (10 * BLOCK + 10, 1000)]
    path = write_sparse_image(str(tmp_path / "disk.raw"), size, regions)
    return {"path": path, "size": size, "nonzero_blocks": [0, 3, 4, 10],
            "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}


@pytest.fixture
def read_back():
    """read_back(ebs_client, snapshot_id, size) -> (bytes, written block indexes)."""
    return read_snapshot

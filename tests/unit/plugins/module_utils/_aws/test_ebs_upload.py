# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the EBS block uploader's logic.

The uploader talks to AWS through a botocore client. Here an in-memory EBS stand-in (FakeEbs) takes its
place so the block logic, checksums, retries and cleanup can be checked quickly and exhaustively; the same
code runs against a real moto server over HTTP in tests/integration/publish.
"""
import base64
import hashlib
import io
import threading
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.attestable.ami.plugins.module_utils._aws import ebs_upload
from ansible_collections.attestable.ami.plugins.module_utils._aws.ebs_upload import BLOCK_SIZE

NO_SLEEP = ebs_upload.RetryPolicy(attempts=4, base_delay=0, max_delay=0, sleep=lambda _s: None)


def client_error(code, status):
    return ClientError({"Error": {"Code": code, "Message": "test"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutSnapshotBlock")


class FakeEbs(object):
    """In-memory EBS direct API: checks every block's checksum and the LINEAR checksum on completion."""

    def __init__(self, failures=None):
        self.blocks = {}
        self.failures = dict(failures or {})  # block index -> list of exceptions to raise first
        self.completed = None
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def start_snapshot(self, **kwargs):
        self.started = kwargs
        return {"SnapshotId": "snap-0123456789abcdef0", "Status": "pending"}

    def put_snapshot_block(self, SnapshotId, BlockIndex, BlockData, DataLength, Checksum, ChecksumAlgorithm):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            pending = self.failures.get(BlockIndex)
            error = pending.pop(0) if pending else None
        try:
            if error is not None:
                raise error
            assert len(BlockData) == DataLength == BLOCK_SIZE
            assert ChecksumAlgorithm == "SHA256"
            assert base64.b64decode(Checksum) == hashlib.sha256(BlockData).digest()
            with self.lock:
                self.blocks[BlockIndex] = BlockData
            return {}
        finally:
            with self.lock:
                self.in_flight -= 1

    def complete_snapshot(self, **kwargs):
        self.completed = kwargs
        digests = b"".join(hashlib.sha256(self.blocks[i]).digest() for i in sorted(self.blocks))
        if kwargs["ChangedBlocksCount"]:
            assert kwargs["ChecksumAggregationMethod"] == "LINEAR"
            assert kwargs["Checksum"] == base64.b64encode(hashlib.sha256(digests).digest()).decode()
        assert kwargs["ChangedBlocksCount"] == len(self.blocks)
        return {"Status": "pending"}

    def image(self, size):
        out = bytearray(size + BLOCK_SIZE)
        for index, data in self.blocks.items():
            out[index * BLOCK_SIZE:(index + 1) * BLOCK_SIZE] = data
        return bytes(out[:size])


def write_image(tmp_path, size, chunks):
    path = tmp_path / "disk.raw"
    with open(str(path), "wb") as handle:
        handle.truncate(size)
        for offset, data in chunks:
            handle.seek(offset)
            handle.write(data[:max(0, size - offset)])
    return str(path)


def test_iter_blocks_pads_only_the_last_block():
    data = b"x" * (2 * BLOCK_SIZE + 10)
    blocks = list(ebs_upload.iter_blocks(io.BytesIO(data)))
    assert [item[0] for item in blocks] == [0, 1, 2]
    assert [len(item[1]) for item in blocks] == [BLOCK_SIZE, BLOCK_SIZE, 10]
    assert len(ebs_upload.pad_block(blocks[2][1])) == BLOCK_SIZE
    assert ebs_upload.pad_block(blocks[2][1])[10:] == bytes(BLOCK_SIZE - 10)
    assert [len(item[1]) for item in ebs_upload.iter_blocks(io.BytesIO(data), size=BLOCK_SIZE + 5)] == [BLOCK_SIZE, 5]


def test_zero_detection_and_sizes():
    assert ebs_upload.is_zero_block(bytes(BLOCK_SIZE))
    assert ebs_upload.is_zero_block(bytes(7))
    assert not ebs_upload.is_zero_block(bytes(BLOCK_SIZE - 1) + b"\x01")
    assert ebs_upload.volume_size_gib(1) == 1
    assert ebs_upload.volume_size_gib(1024 ** 3) == 1
    assert ebs_upload.volume_size_gib(1024 ** 3 + 1) == 2
    assert ebs_upload.block_count(BLOCK_SIZE + 1) == 2


def test_linear_checksum_depends_on_order():
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    assert ebs_upload.linear_checksum([a, b]) == base64.b64encode(hashlib.sha256(a + b).digest()).decode()
    assert ebs_upload.linear_checksum([a, b]) != ebs_upload.linear_checksum([b, a])


@pytest.mark.parametrize("exc, retryable", [
    (client_error("ThrottlingException", 400), True),
    (client_error("RequestLimitExceeded", 400), True),
    (client_error("Whatever", 503), True),
    (client_error("InternalServerException", 500), True),
    (client_error("TooManyRequests", 429), True),
    (client_error("AccessDeniedException", 403), False),
    (client_error("ValidationException", 400), False),
    (EndpointConnectionError(endpoint_url="http://x"), True),
    (ValueError("bug"), False),
])
def test_retry_classification(exc, retryable):
    assert ebs_upload.is_retryable(exc) is retryable


def test_call_with_retry_backs_off_then_gives_up():
    sleeps = []
    policy = ebs_upload.RetryPolicy(attempts=3, base_delay=1, max_delay=10, sleep=sleeps.append)
    counter = ebs_upload._Counter()
    calls = []

    def always_busy():
        calls.append(1)
        raise client_error("ServiceUnavailable", 503)

    with pytest.raises(ebs_upload.UploadError, match="failed after 3 attempts"):
        ebs_upload.call_with_retry(always_busy, policy, counter, "PutSnapshotBlock of block 1")
    assert len(calls) == 3 and len(sleeps) == 2
    assert 0 <= sleeps[0] <= 1 and 0 <= sleeps[1] <= 2
    assert counter.requests == 3 and counter.retries == 2


def test_sparse_upload_writes_only_nonzero_blocks(tmp_path):
    size = 7 * BLOCK_SIZE + 333
    path = write_image(tmp_path, size, [(5, b"a" * 10), (3 * BLOCK_SIZE - 1, b"bc"), (7 * BLOCK_SIZE + 300, b"z")])
    ebs = FakeEbs()
    figures = ebs_upload.upload_image(ebs, path, workers=3, retry=NO_SLEEP, tags={"Name": "t"})
    assert sorted(ebs.blocks) == [0, 2, 3, 7]
    assert ebs.image(size) == open(path, "rb").read()
    assert figures["blocks_total"] == 8 and figures["blocks_written"] == 4 and figures["blocks_skipped"] == 4
    assert figures["bytes_uploaded"] == 4 * BLOCK_SIZE
    assert figures["image_sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert ebs.started["VolumeSize"] == 1 and ebs.started["Tags"] == [{"Key": "Name", "Value": "t"}]


def test_retried_blocks_arrive_and_failures_clean_up(tmp_path):
    size = 4 * BLOCK_SIZE
    path = write_image(tmp_path, size, [(i * BLOCK_SIZE, b"\x07" * 100) for i in range(4)])
    ebs = FakeEbs({1: [client_error("ThrottlingException", 400)], 2: [client_error("X", 502)] * 2})
    figures = ebs_upload.upload_image(ebs, path, workers=2, retry=NO_SLEEP)
    assert figures["retries"] == 3 and sorted(ebs.blocks) == [0, 1, 2, 3]

    deleted = []
    broken = FakeEbs({2: [client_error("X", 500)] * 10})
    with pytest.raises(ebs_upload.UploadError) as info:
        ebs_upload.upload_image(broken, path, workers=2, retry=NO_SLEEP, delete_snapshot=deleted.append)
    assert "block 2 failed after 4 attempts" in str(info.value)
    assert "was deleted" in str(info.value)
    assert deleted == ["snap-0123456789abcdef0"] and broken.completed is None


def test_changed_image_is_refused(tmp_path):
    path = write_image(tmp_path, BLOCK_SIZE, [(0, b"data")])
    deleted = []
    with pytest.raises(ebs_upload.UploadError, match="changed while it was read"):
        ebs_upload.upload_image(FakeEbs(), path, expected_sha256="0" * 64, retry=NO_SLEEP,
                                delete_snapshot=deleted.append)
    assert deleted == ["snap-0123456789abcdef0"]


def test_reading_stays_a_bounded_distance_ahead_of_writing(tmp_path, monkeypatch):
    size = 60 * BLOCK_SIZE
    path = write_image(tmp_path, size, [(i * BLOCK_SIZE, b"\x01") for i in range(60)])
    read = [0]
    ahead = []
    original = ebs_upload.iter_blocks

    def counting(handle, size=None):
        for item in original(handle, size):
            read[0] += 1
            yield item

    class SlowEbs(FakeEbs):
        def put_snapshot_block(self, **kwargs):
            time.sleep(0.002)
            ahead.append(read[0] - len(self.blocks))
            return FakeEbs.put_snapshot_block(self, **kwargs)

    monkeypatch.setattr(ebs_upload, "iter_blocks", counting)
    ebs = SlowEbs()
    ebs_upload.upload_image(ebs, path, workers=2, retry=NO_SLEEP)
    assert len(ebs.blocks) == 60 and ebs.max_in_flight <= 2
    # queue (2 per worker) + one block per worker in hand + the one the reader holds
    assert max(ahead) <= 2 * 2 + 2 + 1


@pytest.mark.parametrize("content, message", [(None, "cannot read"), (b"", r"is empty \(0 bytes\)")])
def test_bad_source(tmp_path, content, message):
    path = tmp_path / "disk.raw"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ebs_upload.UploadError, match=message):
        ebs_upload.image_size(str(path))
    with pytest.raises(ebs_upload.UploadError, match="not a regular file"):
        ebs_upload.image_size(str(tmp_path))


def test_volume_size_too_small(tmp_path):
    path = str(tmp_path / "big.raw")
    with open(path, "wb") as handle:
        handle.truncate(1024 ** 3 + 1)
    with pytest.raises(ebs_upload.UploadError, match="volume_size: 1 GiB cannot hold"):
        ebs_upload.upload_image(FakeEbs(), path, volume_size=1)


@settings(max_examples=25, deadline=None)
@given(blocks=st.integers(min_value=1, max_value=6), tail=st.integers(min_value=0, max_value=BLOCK_SIZE - 1),
       writes=st.lists(st.tuples(st.integers(min_value=0, max_value=7 * BLOCK_SIZE), st.binary(min_size=1, max_size=64)),
                       max_size=6),
       workers=st.integers(min_value=1, max_value=4))
def test_any_sparse_image_round_trips(tmp_path_factory, blocks, tail, writes, workers):
    size = blocks * BLOCK_SIZE + tail
    path = write_image(tmp_path_factory.mktemp("img"), size, writes)
    original = open(path, "rb").read()
    ebs = FakeEbs()
    figures = ebs_upload.upload_image(ebs, path, workers=workers, retry=NO_SLEEP)
    assert ebs.image(size) == original
    nonzero = set(i for i in range(ebs_upload.block_count(size))
                  if any(original[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]))
    assert set(ebs.blocks) == nonzero
    assert figures["blocks_written"] + figures["blocks_skipped"] == ebs_upload.block_count(size)


def not_found():
    return ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "snapshot does not exist"},
                        "ResponseMetadata": {"HTTPStatusCode": 404}}, "PutSnapshotBlock")


class FakeClock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_not_found_is_retried_only_inside_the_window():
    clock = FakeClock()
    policy = ebs_upload.RetryPolicy(attempts=2, base_delay=1, max_delay=1, sleep=clock.sleep)
    answers = [not_found()] * 5 + ["ok"]

    def put(**_kwargs):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    counter = ebs_upload._Counter()
    window = ebs_upload.ConsistencyWindow(120, clock=clock)
    assert ebs_upload.call_with_retry(put, policy, counter, "PutSnapshotBlock of block 0", window=window) == "ok"
    assert counter.requests == 6 and counter.retries == 5  # beyond policy.attempts: the window bounds it

    always = ebs_upload.ConsistencyWindow(10, clock=clock)
    calls = []

    def missing(**_kwargs):
        calls.append(clock.now)
        raise not_found()

    with pytest.raises(ebs_upload.UploadError, match="still did not exist 10 seconds after StartSnapshot"):
        ebs_upload.call_with_retry(missing, policy, ebs_upload._Counter(), "CompleteSnapshot", window=always)
    assert calls[-1] - calls[0] <= 10 and len(calls) > 2
    with pytest.raises(ebs_upload.UploadError, match="CompleteSnapshot failed: ResourceNotFoundException"):
        ebs_upload.call_with_retry(missing, policy, ebs_upload._Counter(), "CompleteSnapshot")  # no window


def test_upload_retries_a_new_snapshot_that_is_not_there_yet(tmp_path):
    path = write_image(tmp_path, 2 * BLOCK_SIZE, [(0, b"a"), (BLOCK_SIZE, b"b")])
    ebs = FakeEbs({0: [not_found()] * 3, 1: [not_found()]})
    figures = ebs_upload.upload_image(ebs, path, workers=2, retry=NO_SLEEP)
    assert sorted(ebs.blocks) == [0, 1] and figures["retries"] == 4


def test_interrupt_is_not_turned_into_an_upload_error(tmp_path):
    path = write_image(tmp_path, 2 * BLOCK_SIZE, [(0, b"a"), (BLOCK_SIZE, b"b")])
    deleted = []
    ebs = FakeEbs()

    def interrupted(**_kwargs):
        raise KeyboardInterrupt()

    ebs.complete_snapshot = interrupted
    with pytest.raises(KeyboardInterrupt):
        ebs_upload.upload_image(ebs, path, workers=1, retry=NO_SLEEP, delete_snapshot=deleted.append)
    assert deleted == ["snap-0123456789abcdef0"]  # still cleaned up


def test_tag_values_are_text(tmp_path):
    path = write_image(tmp_path, BLOCK_SIZE, [(0, b"a")])
    ebs = FakeEbs()
    ebs_upload.upload_image(ebs, path, retry=NO_SLEEP, tags={"Build": 42, "Signed": True, "Name": "n"})
    assert ebs.started["Tags"] == [{"Key": "Build", "Value": "42"}, {"Key": "Name", "Value": "n"},
                                   {"Key": "Signed", "Value": "True"}]


def test_interrupt_while_reading_propagates_and_deletes_the_snapshot(tmp_path, monkeypatch):
    path = write_image(tmp_path, 8 * BLOCK_SIZE, [(i * BLOCK_SIZE, b"x%d" % i) for i in range(8)])
    deleted = []
    ebs = FakeEbs()
    real_iter_blocks = ebs_upload.iter_blocks

    def interrupted_after_three(handle, size=None):
        for index, data in real_iter_blocks(handle, size):
            if index == 3:
                raise KeyboardInterrupt()
            yield index, data

    monkeypatch.setattr(ebs_upload, "iter_blocks", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        ebs_upload.upload_image(ebs, path, workers=2, retry=NO_SLEEP, delete_snapshot=deleted.append)
    assert deleted == ["snap-0123456789abcdef0"]
    assert ebs.completed is None  # never completed
    assert set(ebs.blocks) <= set([0, 1, 2])  # nothing after the interrupt was sent


def test_tag_list_input_keeps_text_and_sorts(tmp_path):
    path = write_image(tmp_path, BLOCK_SIZE, [(0, b"a")])
    ebs = FakeEbs()
    # what amazon.aws's ansible_dict_to_boto3_tag_list gives the module: a list, in the dict's order
    ebs_upload.upload_image(ebs, path, retry=NO_SLEEP,
                            tags=[{"Key": "Signed", "Value": "True"}, {"Key": "Build", "Value": 42}])
    assert ebs.started["Tags"] == [{"Key": "Build", "Value": "42"}, {"Key": "Signed", "Value": "True"}]


class ReadableEbs(FakeEbs):
    """FakeEbs plus the read-back APIs, paged two blocks at a time."""

    def list_snapshot_blocks(self, SnapshotId, NextToken=None):
        indices = sorted(self.blocks)
        start = int(NextToken or 0)
        page = {"Blocks": [{"BlockIndex": i, "BlockToken": "t%d" % i} for i in indices[start:start + 2]],
                "BlockSize": 512}  # what moto reports (AWS: 524288); not relied on
        if start + 2 < len(indices):
            page["NextToken"] = str(start + 2)
        return page

    def get_snapshot_block(self, SnapshotId, BlockIndex, BlockToken):
        assert BlockToken == "t%d" % BlockIndex
        self.reads = getattr(self, "reads", []) + [BlockIndex]
        return {"BlockData": io.BytesIO(self.blocks[BlockIndex])}


def test_verify_snapshot_compares_block_set_and_contents(tmp_path):
    size = 6 * BLOCK_SIZE + 5
    path = write_image(tmp_path, size, [(i * BLOCK_SIZE + 2, b"%d" % i) for i in (0, 2, 3, 5, 6)])
    ebs = ReadableEbs()
    ebs_upload.upload_image(ebs, path, retry=NO_SLEEP)
    scan = ebs_upload.scan_image(path)
    assert sorted(scan["blocks"]) == [0, 2, 3, 5, 6]
    assert scan["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert ebs_upload.verify_snapshot(ebs, "snap-x", scan) == ("", 5)
    assert sorted(ebs.reads) == [0, 2, 3, 5, 6]

    ebs.reads = []
    reason, compared = ebs_upload.verify_snapshot(ebs, "snap-x", scan, sample=3)
    assert reason == "" and compared == 3 and 0 in ebs.reads and 6 in ebs.reads

    altered = ReadableEbs()
    altered.blocks = dict(ebs.blocks)
    altered.blocks[3] = b"\x01" + altered.blocks[3][1:]
    assert ebs_upload.verify_snapshot(altered, "snap-x", scan)[0] == "block 3 differs from the image's block 3"
    extra = ReadableEbs()
    extra.blocks = dict(ebs.blocks, **{})
    extra.blocks[4] = bytes(BLOCK_SIZE)  # a written zero block: not what an upload of this image leaves
    assert "extra [4]" in ebs_upload.verify_snapshot(extra, "snap-x", scan)[0]


def test_choose_sample_keeps_ends_and_size():
    indices = list(range(0, 1000, 3))
    chosen = ebs_upload.choose_sample(indices, 10)
    assert len(chosen) == 10 and chosen[0] == 0 and chosen[-1] == 999 and set(chosen) <= set(indices)
    assert ebs_upload.choose_sample(indices, None) == indices
    assert ebs_upload.choose_sample([4], 10) == [4]

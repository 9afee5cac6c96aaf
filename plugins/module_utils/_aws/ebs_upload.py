# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Upload a raw disk image to a new EBS snapshot with the EBS direct APIs (what coldsnap does, in Python 3.9).

Plain Python: boto3/botocore clients are passed in, nothing from Ansible is imported.

The image is read once, sequentially, by the calling thread. Blocks of 512 KiB that are all zeros are skipped
(EBS reads never-written blocks back as zeros); the others go through a bounded queue to a pool of worker
threads that share one botocore client (botocore clients are thread-safe). Each worker hashes its block
(SHA-256, sent as the block checksum) and writes it, retrying throttling, 5xx and connection errors with
exponential backoff and jitter; a new snapshot's "does not exist" answers (HTTP 404 ResourceNotFoundException:
EBS is eventually consistent) are retried too, within a bounded window after StartSnapshot. CompleteSnapshot
carries the LINEAR aggregate checksum: SHA-256 over the concatenated per-block digests in block-index order.
Memory is bounded by the queue: about (2 * workers + 1) blocks.

An earlier snapshot is only reused after its content is read back (scan_image + verify_snapshot): the set of
written block indices must equal the image's non-zero blocks, and sampled blocks must hash like the image's.
"""

import base64
import hashlib
import os
import random
import stat
import threading
import time
import uuid

from queue import Queue

from ansible_collections.attestable.ami.plugins.module_utils._common import measurements as _tag_keys

try:
    import botocore.exceptions as _botocore_exceptions
except ImportError:  # pragma: no cover - the module reports the missing dependency itself
    _botocore_exceptions = None

BLOCK_SIZE = 512 * 1024
GIB = 1024 * 1024 * 1024
ZERO_BLOCK = bytes(BLOCK_SIZE)
SHA256_TAG = _tag_keys.IMAGE_SHA256_TAG  # the collection's tag keys are listed in _common/measurements.py
SIZE_TAG = _tag_keys.IMAGE_SIZE_TAG
LEGACY_SHA256_TAG = _tag_keys.LEGACY_TAG_KEYS[SHA256_TAG]  # read, never written
LEGACY_SIZE_TAG = _tag_keys.LEGACY_TAG_KEYS[SIZE_TAG]
NOT_FOUND_CODES = frozenset(["ResourceNotFoundException"])
# How long the EBS team advises retrying "does not exist" for a just-started snapshot (coldsnap #43 / #56).
DEFAULT_CONSISTENCY_SECONDS = 120

RETRYABLE_ERROR_CODES = frozenset([
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "SlowDown", "InternalServerException",
    "InternalError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
    "RequestTimeout", "RequestTimeoutException",
])


class UploadError(Exception):
    """The upload cannot go on; the message says why and what to do."""

    def __init__(self, message, snapshot_id=None):
        super(UploadError, self).__init__(message)
        self.snapshot_id = snapshot_id


class RetryPolicy(object):
    """Per-request retries: `attempts` tries in all, sleeping base * 2**n (capped, full jitter) in between."""

    def __init__(self, attempts=6, base_delay=0.1, max_delay=5.0, sleep=time.sleep):
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep

    def delay(self, retry_number):
        return random.uniform(0, min(self.max_delay, self.base_delay * (2 ** retry_number)))


def image_size(path):
    """Size in bytes of the raw image at path (regular file or block device); UploadError when unusable."""
    if not path:
        raise UploadError("src: a path to a raw disk image is required")
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UploadError("src: cannot read the disk image %s: %s" % (path, exc.strerror or exc))
    if stat.S_ISBLK(info.st_mode):
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
    elif stat.S_ISREG(info.st_mode):
        size = info.st_size
    else:
        raise UploadError("src: %s is not a regular file or block device holding a raw disk image" % path)
    if size == 0:
        raise UploadError("src: the disk image %s is empty (0 bytes); expected a raw disk image" % path)
    if not os.access(path, os.R_OK):
        raise UploadError("src: the disk image %s is not readable by this user" % path)
    return size


def volume_size_gib(size_bytes):
    """The smallest whole number of GiB that holds size_bytes."""
    return max(1, (size_bytes + GIB - 1) // GIB)


def block_count(size_bytes):
    return (size_bytes + BLOCK_SIZE - 1) // BLOCK_SIZE


def iter_blocks(handle, size=None):
    """Yield (index, block) for a binary file object, each block exactly BLOCK_SIZE (the last zero-padded).

    With size, stops after size bytes (block devices can be longer than the data wanted)."""
    index = 0
    remaining = size
    while remaining is None or remaining > 0:
        want = BLOCK_SIZE if remaining is None else min(BLOCK_SIZE, remaining)
        data = handle.read(want)
        while data and len(data) < want:
            more = handle.read(want - len(data))
            if not more:
                break
            data += more
        if not data:
            break
        if remaining is not None:
            remaining -= len(data)
        yield index, data
        if len(data) < BLOCK_SIZE:
            return
        index += 1


def pad_block(data):
    if len(data) == BLOCK_SIZE:
        return data
    return data + bytes(BLOCK_SIZE - len(data))


def is_zero_block(data):
    return data == ZERO_BLOCK[:len(data)]


def b64_digest(digest):
    return base64.b64encode(digest).decode("ascii")


def linear_checksum(digests):
    """The LINEAR aggregate checksum: base64 SHA-256 of the per-block digests concatenated in index order."""
    outer = hashlib.sha256()
    for digest in digests:
        outer.update(digest)
    return b64_digest(outer.digest())


def is_retryable(exc):
    """True for throttling, 5xx and connection-level errors (worth another try), False otherwise."""
    if _botocore_exceptions is None:
        return False
    if isinstance(exc, _botocore_exceptions.ClientError):
        error = exc.response.get("Error", {}) or {}
        status = (exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode") or 0
        try:
            status = int(status)
        except (TypeError, ValueError):
            status = 0
        return error.get("Code") in RETRYABLE_ERROR_CODES or status >= 500 or status == 429
    return isinstance(exc, (_botocore_exceptions.ConnectionError, _botocore_exceptions.HTTPClientError,
                            _botocore_exceptions.ReadTimeoutError, _botocore_exceptions.ConnectTimeoutError))


def is_not_found(exc):
    """True for the EBS direct APIs' "snapshot does not exist" answer (ResourceNotFoundException, HTTP 404)."""
    if _botocore_exceptions is None or not isinstance(exc, _botocore_exceptions.ClientError):
        return False
    error = exc.response.get("Error", {}) or {}
    status = (exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode")
    return error.get("Code") in NOT_FOUND_CODES or str(status) == "404"


class ConsistencyWindow(object):
    """Until `seconds` after StartSnapshot, "does not exist" answers for the new snapshot are retried."""

    def __init__(self, seconds, clock=time.time):
        self.seconds = seconds
        self.clock = clock
        self.deadline = clock() + seconds

    def remaining(self):
        return self.deadline - self.clock()


def describe_error(exc):
    if _botocore_exceptions is not None and isinstance(exc, _botocore_exceptions.ClientError):
        error = exc.response.get("Error", {}) or {}
        status = (exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode")
        return "%s (HTTP %s): %s" % (error.get("Code") or "error", status, error.get("Message") or exc)
    return "%s: %s" % (type(exc).__name__, exc)


class _Counter(object):
    def __init__(self):
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0

    def add(self, requests=0, retries=0):
        with self._lock:
            self.requests += requests
            self.retries += retries


# Our own retry, not amazon.aws's AWSRetry: AWSRetry does not retry connection errors (a dropped connection
# mid-block is the common failure of a long upload), cannot count requests and retries per block for the
# result, and this file must run on the builder's Python 3.9 without Ansible.
def call_with_retry(func, policy, counter, what, window=None, **kwargs):
    """Call func(**kwargs), retrying retryable errors per policy; raises UploadError when it gives up.

    With a ConsistencyWindow, "does not exist" answers are retried (beyond policy.attempts) until it closes."""
    attempt = 0
    not_found = 0
    while True:
        counter.add(requests=1)
        try:
            return func(**kwargs)
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised as UploadError
            if window is not None and is_not_found(exc):
                remaining = window.remaining()
                if remaining <= 0:
                    raise UploadError("%s failed: the new snapshot still did not exist %d seconds after StartSnapshot "
                                      "(%d attempts; consistency_timeout): %s"
                                      % (what, window.seconds, not_found + 1, describe_error(exc)))
                not_found += 1
                counter.add(retries=1)
                policy.sleep(min(remaining, max(policy.delay(min(not_found - 1, 6)), 0.05)))
                continue
            attempt += 1
            if not is_retryable(exc):
                raise UploadError("%s failed: %s" % (what, describe_error(exc)))
            if attempt >= policy.attempts:
                raise UploadError("%s failed after %d attempts: %s" % (what, attempt, describe_error(exc)))
            counter.add(retries=1)
            policy.sleep(policy.delay(attempt - 1))


def tag_value(value):
    """Tag values are strings in EC2; numbers and booleans from YAML are written as their text."""
    return value if isinstance(value, str) else str(value)


def tag_list(tags):
    """StartSnapshot's Tags from a dict (sorted by key, values as text) or a ready [{"Key": ..., "Value": ...}]
    list (the module passes amazon.aws's ansible_dict_to_boto3_tag_list; this file imports nothing from Ansible)."""
    if isinstance(tags, dict):
        return [{"Key": k, "Value": tag_value(v)} for k, v in sorted(tags.items())]
    return sorted(({"Key": t["Key"], "Value": tag_value(t["Value"])} for t in tags), key=lambda t: t["Key"])


def upload_image(ebs, path, volume_size=None, tags=None, description=None, encrypted=False, kms_key_id=None,
                 workers=8, expected_sha256=None, timeout_minutes=None, retry=None, delete_snapshot=None,
                 consistency_seconds=DEFAULT_CONSISTENCY_SECONDS):
    """Upload the raw image at path to a new snapshot; returns a dict of figures (see the keys below).

    ebs: a botocore "ebs" client (without botocore retries, so that retries are counted here).
    tags: a dict, or a list of {"Key": ..., "Value": ...}.
    delete_snapshot: callable(snapshot_id) used to remove the snapshot when the upload fails.
    expected_sha256: when given, the image read during upload must have this SHA-256, or nothing is kept.
    consistency_seconds: how long after StartSnapshot a "does not exist" answer for the new snapshot is retried.
    Raises UploadError (with the snapshot already removed, or its id in the message if removal failed).
    """
    retry = retry or RetryPolicy()
    size = image_size(path)
    needed = volume_size_gib(size)
    if volume_size is None:
        volume_size = needed
    elif volume_size < needed:
        raise UploadError("volume_size: %d GiB cannot hold the %d-byte image %s; use at least %d"
                          % (volume_size, size, path, needed))
    if workers < 1:
        raise UploadError("workers: must be at least 1, got %d" % workers)

    counter = _Counter()
    start_args = dict(VolumeSize=volume_size, ClientToken=str(uuid.uuid4()),
                      Timeout=timeout_minutes or max(60, min(4320, 60 + size // GIB * 10)))
    if tags:
        start_args["Tags"] = tag_list(tags)
    if description:
        start_args["Description"] = description
    if encrypted or kms_key_id:
        start_args["Encrypted"] = True
        if kms_key_id:
            start_args["KmsKeyArn"] = kms_key_id
    started = time.time()
    response = call_with_retry(ebs.start_snapshot, retry, counter, "StartSnapshot", **start_args)
    snapshot_id = response["SnapshotId"]
    window = ConsistencyWindow(consistency_seconds)

    try:
        figures = _write_blocks(ebs, snapshot_id, path, size, workers, retry, counter, window)
        if expected_sha256 and figures["image_sha256"] != expected_sha256.lower():
            raise UploadError("src: the image %s changed while it was read: its SHA-256 is %s, expected %s"
                              % (path, figures["image_sha256"], expected_sha256))
        complete_args = dict(SnapshotId=snapshot_id, ChangedBlocksCount=figures["blocks_written"])
        if figures["blocks_written"]:
            complete_args.update(Checksum=figures.pop("linear_checksum"), ChecksumAlgorithm="SHA256",
                                 ChecksumAggregationMethod="LINEAR")
        else:
            figures.pop("linear_checksum")
        completion = call_with_retry(ebs.complete_snapshot, retry, counter, "CompleteSnapshot", window=window,
                                     **complete_args)
        if completion.get("Status") == "error":
            raise UploadError("CompleteSnapshot reported status 'error' for %s" % snapshot_id)
    except (KeyboardInterrupt, SystemExit):
        # Interrupted: still try not to leave an incomplete snapshot behind, then let the interrupt through.
        _cleanup(snapshot_id, delete_snapshot, "interrupted")
        raise
    except Exception as exc:  # noqa: BLE001 - any failure must delete the incomplete snapshot
        message = str(exc) if isinstance(exc, UploadError) else describe_error(exc)
        raise UploadError(_cleanup(snapshot_id, delete_snapshot, "uploading %s failed: %s" % (path, message)),
                          snapshot_id=snapshot_id)

    figures.update(snapshot_id=snapshot_id, volume_size=volume_size, image_size=size,
                   requests=counter.requests, retries=counter.retries, seconds=time.time() - started)
    return figures


def _cleanup(snapshot_id, delete_snapshot, message):
    if delete_snapshot is None:
        return "%s; snapshot %s was left behind (it turns to state 'error' after its timeout)" % (
            message, snapshot_id)
    try:
        delete_snapshot(snapshot_id)
    except Exception as exc:  # noqa: BLE001 - reported to the user, the upload error stays the main one
        return "%s; deleting the incomplete snapshot %s also failed (%s): delete it by hand" % (
            message, snapshot_id, describe_error(exc))
    return "%s; the incomplete snapshot %s was deleted" % (message, snapshot_id)


def _write_blocks(ebs, snapshot_id, path, size, workers, retry, counter, window=None):
    work = Queue(maxsize=2 * workers)
    digests = {}
    lock = threading.Lock()
    failed = threading.Event()
    errors = []

    def worker():
        while True:
            item = work.get()
            if item is None:
                return
            if failed.is_set():
                continue  # drain the queue so the reader never blocks
            index, data = item
            digest = hashlib.sha256(data).digest()
            try:
                call_with_retry(ebs.put_snapshot_block, retry, counter, "PutSnapshotBlock of block %d" % index,
                                window=window, SnapshotId=snapshot_id, BlockIndex=index, BlockData=data,
                                DataLength=BLOCK_SIZE, Checksum=b64_digest(digest), ChecksumAlgorithm="SHA256")
            except Exception as exc:  # noqa: BLE001 - handed to the reading thread
                with lock:
                    errors.append(exc)
                failed.set()
                continue
            with lock:
                digests[index] = digest

    threads = [threading.Thread(target=worker, name="ebs-block-%d" % n) for n in range(workers)]
    for thread in threads:
        thread.daemon = True
        thread.start()

    image_digest = hashlib.sha256()
    total = skipped = 0
    try:
        with open(path, "rb") as handle:
            for index, data in iter_blocks(handle, size):
                image_digest.update(data)
                total += 1
                if failed.is_set():
                    break
                if is_zero_block(data):
                    skipped += 1
                    continue
                work.put((index, pad_block(data)))
    except BaseException:
        failed.set()  # an interrupt (or error) while reading: the workers drop what is queued instead of sending it
        raise
    finally:
        for _thread in threads:
            work.put(None)
        for thread in threads:
            thread.join()

    if errors:
        error = errors[0]
        raise error if isinstance(error, UploadError) else UploadError(describe_error(error))
    if total != block_count(size):
        raise UploadError("src: read %d blocks of %s, expected %d (the file shrank while it was read)"
                          % (total, path, block_count(size)))
    written = len(digests)
    return {
        "image_sha256": image_digest.hexdigest(),
        "blocks_total": total,
        "blocks_written": written,
        "blocks_skipped": skipped,
        "bytes_uploaded": written * BLOCK_SIZE,
        "linear_checksum": linear_checksum(digests[i] for i in sorted(digests)),
    }


# ---- reuse: read an earlier snapshot back and compare it with the image


def scan_image(path, size=None):
    """One pass over the image: its SHA-256 and the SHA-256 of every non-zero block, {index: digest}."""
    size = image_size(path) if size is None else size
    whole = hashlib.sha256()
    blocks = {}
    with open(path, "rb") as handle:
        for index, data in iter_blocks(handle, size):
            whole.update(data)
            if not is_zero_block(data):
                blocks[index] = hashlib.sha256(pad_block(data)).digest()
    return {"sha256": whole.hexdigest(), "blocks": blocks, "size": size}


def choose_sample(indices, sample, rng=None):
    """The block indices to read back: all of them when sample is None or covers them, else the first and the
    last plus a random choice (unpredictable, so a snapshot cannot be prepared to pass a known sample)."""
    indices = sorted(indices)
    if sample is None or sample >= len(indices):
        return indices
    chosen = set([indices[0], indices[-1]])
    rest = [i for i in indices if i not in chosen]
    rng = rng or random.SystemRandom()
    chosen.update(rng.sample(rest, max(0, min(len(rest), sample - len(chosen)))))
    return sorted(chosen)


def snapshot_block_tokens(ebs, snapshot_id, retry=None, counter=None):
    """{block index: block token} of the blocks written to a snapshot (ListSnapshotBlocks, all pages)."""
    retry = retry or RetryPolicy()
    counter = counter or _Counter()
    tokens = {}
    kwargs = {"SnapshotId": snapshot_id}
    while True:
        page = call_with_retry(ebs.list_snapshot_blocks, retry, counter, "ListSnapshotBlocks of %s" % snapshot_id,
                               **kwargs)
        for block in page.get("Blocks") or []:
            tokens[block["BlockIndex"]] = block["BlockToken"]
        if not page.get("NextToken"):
            return tokens
        kwargs["NextToken"] = page["NextToken"]


def verify_snapshot(ebs, snapshot_id, scan, sample=None, retry=None, rng=None):
    """Why the snapshot does not hold the scanned image ("" when it does) and how many blocks were compared.

    The written block indices must be exactly the image's non-zero blocks (so no block is missing or extra),
    and each block of the sample (all blocks with sample=None) must have the image block's SHA-256."""
    retry = retry or RetryPolicy()
    counter = _Counter()
    try:
        tokens = snapshot_block_tokens(ebs, snapshot_id, retry, counter)
        wanted = scan["blocks"]
        if set(tokens) != set(wanted):
            missing = sorted(set(wanted) - set(tokens))
            extra = sorted(set(tokens) - set(wanted))
            return ("its written blocks differ from the image's non-zero blocks (%d written, %d expected; "
                    "missing %s, extra %s)" % (len(tokens), len(wanted), missing[:5], extra[:5])), 0
        compared = 0
        for index in choose_sample(wanted, sample, rng):
            response = call_with_retry(ebs.get_snapshot_block, retry, counter,
                                       "GetSnapshotBlock %d of %s" % (index, snapshot_id),
                                       SnapshotId=snapshot_id, BlockIndex=index, BlockToken=tokens[index])
            body = response["BlockData"]
            data = body.read() if hasattr(body, "read") else body
            compared += 1
            if len(data) != BLOCK_SIZE or hashlib.sha256(data).digest() != wanted[index]:
                return "block %d differs from the image's block %d" % (index, index), compared
        return "", compared
    except UploadError as exc:
        return "it could not be read back: %s" % exc, 0


# DescribeSnapshots until completed, failing on state error and retrying "not found" (a new snapshot may not be
# visible yet); botocore's SnapshotCompleted waiter does not retry InvalidSnapshot.NotFound.
SNAPSHOT_WAITERS = {
    "version": 2,
    "waiters": {
        "SnapshotCompleted": {
            "operation": "DescribeSnapshots", "delay": 5, "maxAttempts": 360,
            "acceptors": [
                {"state": "success", "matcher": "pathAll", "argument": "Snapshots[].State", "expected": "completed"},
                {"state": "failure", "matcher": "pathAny", "argument": "Snapshots[].State", "expected": "error"},
                {"state": "retry", "matcher": "error", "expected": "InvalidSnapshot.NotFound"},
            ],
        },
    },
}


def snapshot_completed_waiter(ec2):
    """A botocore waiter for SnapshotCompleted that also retries InvalidSnapshot.NotFound."""
    import botocore.waiter  # only where botocore is present (the module checks it)

    client = getattr(ec2, "client", ec2)  # amazon.aws's retrying wrapper keeps the botocore client in .client
    return botocore.waiter.create_waiter_with_client(
        "SnapshotCompleted", botocore.waiter.WaiterModel(SNAPSHOT_WAITERS), client)

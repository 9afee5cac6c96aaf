#!/usr/bin/env python3
"""Benchmark the EBS direct uploader against a local moto server (started here, in its own process).

Uploads a 1 GiB raw image with about 20% non-zero 512 KiB blocks twice: with the parallel worker pool and
sequentially (one block at a time), and prints wall time, MiB/s of non-zero data, requests sent and the ratio.

Usage: .venv/bin/python benchmarks/snapshot_upload.py [--size-mib 1024] [--fraction 0.2] [--workers 8]
Figures depend on the machine: moto is single-process Python, so on a small machine it, not the uploader,
is usually the bottleneck. This is not run in CI.
"""
import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# conftest makes the checkout importable as ansible_collections.attestable.ami
import conftest  # noqa: E402,F401  pylint: disable=unused-import

import boto3  # noqa: E402
import botocore.config  # noqa: E402

from ansible_collections.attestable.ami.plugins.module_utils._aws import ebs_upload  # noqa: E402
from ansible_collections.attestable.ami.plugins.module_utils._common.file_digest import sha256_file  # noqa: E402

MIB = 1024 * 1024


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d" % port
    for _attempt in range(100):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start on %s" % url)


def make_image(path, size, fraction, seed=42):
    rng = random.Random(seed)
    blocks = size // ebs_upload.BLOCK_SIZE
    chosen = sorted(rng.sample(range(blocks), int(blocks * fraction)))
    with open(path, "wb") as handle:
        handle.truncate(size)
        for index in chosen:
            handle.seek(index * ebs_upload.BLOCK_SIZE)
            handle.write(os.urandom(ebs_upload.BLOCK_SIZE))
    return len(chosen)


def run(url, path, workers, verify=False):
    config = botocore.config.Config(retries={"total_max_attempts": 1}, max_pool_connections=workers + 2)
    ebs = boto3.client("ebs", region_name="us-east-1", endpoint_url=url, config=config)
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=url)
    started = time.time()
    figures = ebs_upload.upload_image(ebs, path, workers=workers,
                                      delete_snapshot=lambda sid: ec2.delete_snapshot(SnapshotId=sid))
    seconds = time.time() - started
    if verify:  # what a later run does before it reuses this snapshot (reuse: sample, then reuse: full)
        reader = boto3.client("ebs", region_name="us-east-1", endpoint_url=url)
        for label, sample in (("verify reuse (sample 64)", 64), ("verify reuse (full)", None)):
            started = time.time()
            scan = ebs_upload.scan_image(path)
            reason, compared = ebs_upload.verify_snapshot(reader, figures["snapshot_id"], scan, sample=sample)
            assert reason == "", reason
            print("%-26s %8.2f s  (image scan + %d blocks read back and compared)"
                  % (label, time.time() - started, compared))
    urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST")).read()  # free memory
    return figures, seconds


def warm_up(url):
    """moto builds its EC2/EBS backends on first use (seconds); keep that out of the timed runs."""
    ebs = boto3.client("ebs", region_name="us-east-1", endpoint_url=url)
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)
    boto3.client("ec2", region_name="us-east-1", endpoint_url=url).delete_snapshot(SnapshotId=snapshot_id)


def report(label, figures, seconds):
    mib = figures["bytes_uploaded"] / MIB
    print("%-26s %8.2f s  %8.1f MiB/s non-zero  %5d requests (%d blocks written, %d skipped, %d retries)"
          % (label, seconds, mib / seconds, figures["requests"], figures["blocks_written"],
             figures["blocks_skipped"], figures["retries"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
    proc, url = start_moto()
    workdir = tempfile.mkdtemp(prefix="snapshot-upload-bench-")
    path = os.path.join(workdir, "disk.raw")
    try:
        nonzero = make_image(path, args.size_mib * MIB, args.fraction)
        print("image: %d MiB, %d of %d blocks non-zero (%.0f%%), moto at %s, %d CPUs"
              % (args.size_mib, nonzero, args.size_mib * MIB // ebs_upload.BLOCK_SIZE,
                 100.0 * nonzero * ebs_upload.BLOCK_SIZE / (args.size_mib * MIB), url, os.cpu_count()))
        warm_up(url)
        started = time.time()
        sha256_file(path)
        print("%-26s %8.2f s  (plain SHA-256 of the image, for comparison with the scan below)"
              % ("hash pass", time.time() - started))
        parallel, parallel_s = run(url, path, args.workers, verify=True)
        report("parallel (%d workers)" % args.workers, parallel, parallel_s)
        sequential, sequential_s = run(url, path, 1)
        report("sequential (1 block)", sequential, sequential_s)
        print("speed-up parallel/sequential: %.2fx" % (sequential_s / parallel_s))
    finally:
        proc.terminate()
        proc.wait()
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(workdir)


if __name__ == "__main__":
    main()

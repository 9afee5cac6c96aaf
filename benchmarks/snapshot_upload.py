#!/usr/bin/env python3
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark the EBS direct uploader (ebs_upload.upload_image) against a local endpoint with network latency.

The endpoint is a small threaded HTTP server, started here in its own process (so that its work does not take
the uploader's GIL), that answers StartSnapshot, PutSnapshotBlock and CompleteSnapshot cheaply - it reads each
block's body and checks its length, nothing more - after waiting --latency-ms per request (25 ms default, the
order of a round trip to a region). So the figures are the uploader's: reading the image, skipping zero blocks,
hashing, botocore's request building and the worker pool's overlap of the round trips.

For each worker count it uploads the same image (about --fraction non-zero 512 KiB blocks) --repeat times and
prints, for the fastest run, the wall time, the time per written block, the speed-up against 1 worker next to
the ideal (workers x), and the CPU time the uploader's process spent per written block (all its threads; the
endpoint's process is not counted). Then the same without latency: the cost per block that latency hides.
Target: 8 workers reach at least 6x of 1 worker's block time at 25 ms.

With --moto, the old comparison against a real moto server runs as well (parallel vs sequential, and reading a
snapshot back as a reuse check does); moto is single-process Python, so there it measures moto more than the
uploader.

Usage: .venv/bin/python benchmarks/snapshot_upload.py [--size-mib 128] [--fraction 0.5] [--latency-ms 25]
       [--workers 1,2,4,8,16] [--repeat 3] [--no-floor] [--moto]
Figures depend on the machine and its load. This is not run in CI.
"""
import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


# ---- the local EBS direct endpoint (runs in a child process: `snapshot_upload.py --serve PORT LATENCY_MS`)


class _EbsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore reuses its pooled connections as with AWS
    latency = 0.025

    def log_message(self, *_args):  # quiet
        pass

    def _answer(self, status, payload=None, headers=None):
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        remaining, received = length, 0
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)
            received += len(chunk)
        return received

    def do_POST(self):
        self._body()
        time.sleep(self.latency)
        if self.path == "/snapshots":
            self._answer(201, {"SnapshotId": "snap-%s" % uuid.uuid4().hex[:17], "Status": "pending",
                               "BlockSize": ebs_upload.BLOCK_SIZE, "VolumeSize": 1})
        elif self.path.startswith("/snapshots/completion/"):
            self._answer(202, {"Status": "completed"})
        else:
            self._answer(404, {"message": "not served here: %s" % self.path},
                         {"x-amzn-ErrorType": "ResourceNotFoundException"})

    def do_PUT(self):
        received = self._body()
        time.sleep(self.latency)
        if "/blocks/" not in self.path or received != ebs_upload.BLOCK_SIZE:
            self._answer(400, {"message": "expected a %d-byte block at /snapshots/<id>/blocks/<n>, got %d bytes at %s"
                               % (ebs_upload.BLOCK_SIZE, received, self.path)},
                         {"x-amzn-ErrorType": "ValidationException"})
            return
        self._answer(201, headers={"x-amz-Checksum": self.headers.get("x-amz-Checksum", ""),
                                   "x-amz-Checksum-Algorithm": "SHA256"})


def serve(port, latency_ms):
    _EbsHandler.latency = latency_ms / 1000.0
    server = ThreadingHTTPServer(("127.0.0.1", port), _EbsHandler)
    server.daemon_threads = True
    server.request_queue_size = 128
    server.serve_forever()


def start_endpoint(latency_ms):
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(port), str(latency_ms)])
    url = "http://127.0.0.1:%d" % port
    for _attempt in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the local endpoint did not start on %s" % url)


# ---- the image and the runs


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


def ebs_client(url, workers):
    # What the snapshot_upload module builds: no botocore retries (ebs_upload retries per block) and a
    # connection pool with room for every worker (botocore's default max_pool_connections is 10).
    config = botocore.config.Config(retries={"total_max_attempts": 1}, max_pool_connections=workers + 2)
    return boto3.client("ebs", region_name="us-east-1", endpoint_url=url, config=config)


def timed_upload(url, path, workers, delete_snapshot=None):
    """(figures, wall seconds, CPU seconds of this process - all its threads, not the endpoint's)."""
    ebs = ebs_client(url, workers)
    started, cpu = time.time(), time.process_time()
    figures = ebs_upload.upload_image(ebs, path, workers=workers, delete_snapshot=delete_snapshot)
    return figures, time.time() - started, time.process_time() - cpu


def local_endpoint_runs(path, worker_counts, latency_ms, repeat=1):
    proc, url = start_endpoint(latency_ms)
    try:
        timed_upload(url, path, 1)  # warm up: imports, the page cache, the endpoint's first connection
        print("local endpoint %s, %d ms per request" % (url, latency_ms))
        print("%8s %9s %12s %10s %8s %8s %14s"
              % ("workers", "seconds", "ms/block", "MiB/s", "speedup", "ideal", "CPU ms/block"))
        base = None
        results = {}
        for workers in worker_counts:
            # best of `repeat` runs: on a shared machine the slower ones measure the other load
            figures, seconds, cpu = min((timed_upload(url, path, workers) for _run in range(repeat)),
                                        key=lambda run: run[1])
            per_block = seconds / max(1, figures["blocks_written"])
            if base is None:
                base = per_block if workers == 1 else None
            speedup = (base / per_block) if base else float("nan")
            results[workers] = speedup
            print("%8d %9.2f %12.2f %10.1f %7.2fx %7dx %14.2f" % (
                workers, seconds, per_block * 1000, figures["bytes_uploaded"] / MIB / seconds, speedup, workers,
                cpu * 1000 / max(1, figures["blocks_written"])))
        return results
    finally:
        proc.terminate()
        proc.wait()


# ---- the old comparison against moto


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


def moto_runs(path, workers):
    proc, url = start_moto()
    try:
        ebs = boto3.client("ebs", region_name="us-east-1", endpoint_url=url)
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=url)
        snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]  # moto builds its backends on first use
        ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)
        timings = {}
        for count in (workers, 1):
            figures, seconds, _cpu = timed_upload(url, path, count,
                                                  delete_snapshot=lambda sid: ec2.delete_snapshot(SnapshotId=sid))
            timings[count] = seconds
            print("%-26s %8.2f s  %5d requests (%d blocks written, %d skipped, %d retries)"
                  % ("moto, %d worker(s)" % count, seconds, figures["requests"], figures["blocks_written"],
                     figures["blocks_skipped"], figures["retries"]))
            if count == workers:  # what a later run does before it reuses this snapshot
                for label, sample in (("verify reuse (sample 64)", 64), ("verify reuse (full)", None)):
                    started = time.time()
                    scan = ebs_upload.scan_image(path)
                    reason, compared = ebs_upload.verify_snapshot(ebs, figures["snapshot_id"], scan, sample=sample)
                    assert reason == "", reason
                    print("%-26s %8.2f s  (image scan + %d blocks read back and compared)"
                          % (label, time.time() - started, compared))
            urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST")).read()
        print("moto: %d workers are %.2fx as fast as 1" % (workers, timings[1] / timings[workers]))
    finally:
        proc.terminate()
        proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--latency-ms", type=int, default=25)
    parser.add_argument("--workers", default="1,2,4,8,16",
                        help="comma-separated worker counts; the speed-up is against the first (use 1 first)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per worker count; the fastest is shown")
    parser.add_argument("--no-floor", action="store_true", help="skip the run without latency")
    parser.add_argument("--moto", action="store_true", help="also run the old parallel/sequential comparison on moto")
    parser.add_argument("--serve", nargs=2, type=int, metavar=("PORT", "LATENCY_MS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
    worker_counts = [int(w) for w in args.workers.split(",")]
    workdir = tempfile.mkdtemp(prefix="snapshot-upload-bench-")
    path = os.path.join(workdir, "disk.raw")
    try:
        nonzero = make_image(path, args.size_mib * MIB, args.fraction)
        print("image: %d MiB, %d of %d blocks non-zero (%.0f%%), %d CPUs, load average %.1f"
              % (args.size_mib, nonzero, args.size_mib * MIB // ebs_upload.BLOCK_SIZE,
                 100.0 * nonzero * ebs_upload.BLOCK_SIZE / (args.size_mib * MIB), os.cpu_count(),
                 os.getloadavg()[0]))
        started = time.time()
        sha256_file(path)
        print("plain SHA-256 of the image: %.2f s" % (time.time() - started))
        results = local_endpoint_runs(path, worker_counts, args.latency_ms, args.repeat)
        if 8 in results and 1 in results:
            print("8 workers: %.2fx of 1 worker's block time (ideal 8x, target at least 6x): %s"
                  % (results[8], "met" if results[8] >= 6 else "NOT met"))
        if args.latency_ms and not args.no_floor:
            # The same with no latency: what a block costs the uploader (and this endpoint) itself - reading,
            # two SHA-256 passes (the image digest and the block checksum), botocore's request, the socket.
            print("without latency (the cost per block that latency hides):")
            local_endpoint_runs(path, [1, max(worker_counts)], 0)
        if args.moto:
            moto_runs(path, max(worker_counts))
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(workdir)


if __name__ == "__main__":
    threading.current_thread().name = "benchmark"
    main()

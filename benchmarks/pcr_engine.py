#!/usr/bin/env python3
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time the PCR engine on a UKI against the floor of hashing the same bytes with hashlib.

Usage: .venv/bin/python benchmarks/pcr_engine.py [UKI.efi] [--repeat N] [--banks sha384,sha256]

Default UKI: ../shared/vectors/uki-objcopy-252/uki.efi (20 MB: systemd-stub 252 + a Debian kernel + initrd),
else one assembled here with objcopy from Debian's systemd stub, systemd-bootx64.efi as a small stand-in
kernel and a 16 MiB random initrd.
The floor reads the file once and hashes, per bank, the whole file and the embedded kernel (the .linux
section): the least any engine must do to produce the UKI's and the kernel's digests. The engine also parses
the PE headers and the UKI, hashes the file with SHA-256 (reported per image) and folds the PCRs.
That SHA-256 runs on a second core while the Authenticode digests are computed (hashlib releases the GIL);
on a single core it adds its own time: the last line shows that case.
Figures are the best of N runs (page cache warm), in milliseconds. Target: ratio <= 1.5.
"""
import argparse
import hashlib
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# conftest makes the checkout importable by its FQCN (ansible_collections.attestable.ami).
import conftest  # noqa: E402,F401 pylint: disable=unused-import

from ansible_collections.attestable.ami.plugins.module_utils._pcr import engine as pcr_engine  # noqa: E402
from ansible_collections.attestable.ami.plugins.module_utils._pcr.authenticode import PeImage  # noqa: E402


def default_uki(workdir):
    vectors = os.environ.get("ATTESTABLE_VECTORS") or os.path.join(os.path.dirname(ROOT), "shared", "vectors")
    path = os.path.join(vectors, "uki-objcopy-252", "uki.efi")
    if os.path.isfile(path):
        return path
    sys.path.insert(0, os.path.join(ROOT, "tests", "unit", "plugins", "module_utils", "_pcr"))
    import pcr_test_images

    initrd = os.path.join(workdir, "initrd")
    with open(initrd, "wb") as handle:
        handle.write(os.urandom(16 << 20))
    return pcr_test_images.build_uki(workdir, initrd=initrd)


def kernel_range(path):
    with open(path, "rb") as handle:
        pe = PeImage(handle.read(), path)
    linux = pe.section(".linux")
    if linux is None:
        return 0, 0
    return linux.pointer_to_raw_data, linux.pointer_to_raw_data + linux.content_size


def floor(path, banks, kernel):
    with open(path, "rb") as handle:
        data = handle.read()
    view = memoryview(data)
    for bank in banks:
        hashlib.new(bank, view).digest()
        hashlib.new(bank, view[kernel[0]:kernel[1]]).digest()


class _InlineThread(object):
    """Runs its target in start(): the engine as it would run on a single core."""

    def __init__(self, target, args=()):
        self._target, self._args = target, args

    def start(self):
        self._target(*self._args)

    def join(self):
        return None


def single_core(func):
    def run():
        saved = pcr_engine.threading.Thread
        pcr_engine.threading.Thread = _InlineThread
        try:
            func()
        finally:
            pcr_engine.threading.Thread = saved
    return run


def best_of(repeat, funcs):
    """Best time (ms) of each function over ``repeat`` rounds; rounds interleave them, so load spikes hit all."""
    best = [float("inf")] * len(funcs)
    for _round in range(repeat):
        for index, func in enumerate(funcs):
            start = time.perf_counter()
            func()
            best[index] = min(best[index], time.perf_counter() - start)
    return [b * 1000.0 for b in best]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uki", nargs="?")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--banks", default="sha384")
    args = parser.parse_args()
    banks = tuple(args.banks.split(","))
    with tempfile.TemporaryDirectory() as workdir:
        path = args.uki or default_uki(workdir)
        kernel = kernel_range(path)
        floor(path, banks, kernel)  # warm the page cache
        floor_ms, engine_ms, inline_ms = best_of(args.repeat, [
            lambda: floor(path, banks, kernel),
            lambda: pcr_engine.compute([path], banks=banks),
            single_core(lambda: pcr_engine.compute([path], banks=banks)),
        ])
        size = os.path.getsize(path)
        print("UKI: %s (%.2f MB, embedded kernel %.2f MB), banks: %s, best of %d"
              % (path, size / 1e6, (kernel[1] - kernel[0]) / 1e6, ",".join(banks), args.repeat))
    print("floor (hashlib over file + kernel): %8.2f ms" % floor_ms)
    print("engine (pcr_engine.compute):        %8.2f ms" % engine_ms)
    print("ratio engine/floor:                 %8.2f  (target <= 1.5)" % (engine_ms / floor_ms))
    print("engine, file SHA-256 on one core:   %8.2f ms, ratio %.2f" % (inline_ms, inline_ms / floor_ms))


if __name__ == "__main__":
    main()

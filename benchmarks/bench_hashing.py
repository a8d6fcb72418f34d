"""Content-hash throughput on this machine: BLAKE3 (molen's choice) beside md5 and sha256.

Run: ``.venv/bin/python benchmarks/bench_hashing.py [--mib 512]``. Prints a table of medians
of five runs, in GB/s, for in-memory bytes and for molen's own ``hash_file`` on a file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import blake3

from molen.hashing import hash_file


def median_seconds(work: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=512, help="size of the test data in MiB")
    args = parser.parse_args()
    data = os.urandom(args.mib << 20)
    gigabytes = len(data) / 1e9
    with tempfile.NamedTemporaryFile(delete=False) as handle:
        handle.write(data)
        path = handle.name
    try:
        rows = [
            ("blake3, bytes, 1 thread", lambda: blake3.blake3(data).hexdigest()),
            ("md5, bytes", lambda: hashlib.md5(data).hexdigest()),
            ("sha256, bytes", lambda: hashlib.sha256(data).hexdigest()),
            ("molen hash_file (blake3, mmap, all cores)", lambda: hash_file(path)),
        ]
        print(f"{args.mib} MiB of random data, {os.cpu_count()} cores, median of 5")
        print(f"{'hash':<44} {'GB/s':>8}")
        for name, work in rows:
            print(f"{name:<44} {gigabytes / median_seconds(work):8.2f}")
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()

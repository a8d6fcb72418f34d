"""Deterministic synthetic data for the data-versioning benchmarks, shared by molen and its peers.

Standard library only, so that molen's side and the DVC peer (which runs under its own venv and
must not import molen) generate byte-identical inputs from the same seed. Generation is never
part of a timed span.

* ``make_big_file(path, size_bytes, seed)``: one file of pseudo-random (incompressible) bytes,
  written in 4 MiB chunks from ``random.Random(seed).randbytes`` (about 250-300 MB/s here).
* ``make_small_files(folder, count, seed)``: ``count`` files of 1-4 KiB each (uniform size in
  bytes), spread round-robin over ``folders`` (default 100) subfolders ``d000``..``d099`` as
  ``fNNNNNN.bin``. Every file's content is random, so no two files share a hash (no dedup).

Command line (for a quick look)::

    python benchmarks/datasets.py big PATH --size-mib 256 [--seed 0]
    python benchmarks/datasets.py small FOLDER --count 20000 [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CHUNK = 4 * 1024 * 1024
MIB = 1024 * 1024

DEFAULT_BIG_SEED = 1
DEFAULT_SMALL_SEED = 2
DEFAULT_SMALL_COUNT = 20_000
DEFAULT_FOLDERS = 100
SMALL_MIN_BYTES = 1024
SMALL_MAX_BYTES = 4096


@dataclass(frozen=True)
class Generated:
    """What a generator wrote: file count, total bytes, subfolder count, seed."""

    files: int
    bytes: int
    folders: int
    seed: int


def make_big_file(path: str | os.PathLike[str], size_bytes: int, seed: int = DEFAULT_BIG_SEED) -> Generated:
    """Write ``size_bytes`` deterministic pseudo-random bytes to ``path`` (replacing it)."""
    if size_bytes < 0:
        raise ValueError("size_bytes must be >= 0")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    left = size_bytes
    with target.open("wb") as handle:
        while left > 0:
            n = min(CHUNK, left)
            handle.write(rng.randbytes(n))
            left -= n
    return Generated(files=1, bytes=size_bytes, folders=0, seed=seed)


def small_file_relpath(index: int, folders: int = DEFAULT_FOLDERS) -> str:
    """Relative path (POSIX) of small file number ``index``: ``dNNN/fNNNNNN.bin``."""
    return f"d{index % folders:03d}/f{index:06d}.bin"


def make_small_files(
    folder: str | os.PathLike[str],
    count: int = DEFAULT_SMALL_COUNT,
    seed: int = DEFAULT_SMALL_SEED,
    *,
    folders: int = DEFAULT_FOLDERS,
) -> Generated:
    """Write ``count`` files of 1-4 KiB of deterministic random bytes under ``folder``.

    File ``i`` is ``folder/small_file_relpath(i, folders)``; its size is
    ``rng.randint(1024, 4096)`` and its content ``rng.randbytes(size)``, drawn in that order
    from one ``random.Random(seed)`` for i = 0, 1, ... so the same arguments always give the
    same tree.
    """
    if count < 0 or folders < 1:
        raise ValueError("count must be >= 0 and folders >= 1")
    root = Path(folder)
    used = min(folders, count)
    for sub in range(used):
        (root / f"d{sub:03d}").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    total = 0
    for i in range(count):
        size = rng.randint(SMALL_MIN_BYTES, SMALL_MAX_BYTES)
        with open(root / small_file_relpath(i, folders), "wb") as handle:
            handle.write(rng.randbytes(size))
        total += size
    return Generated(files=count, bytes=total, folders=used, seed=seed)


def count_files(folder: str | os.PathLike[str]) -> tuple[int, int]:
    """(number of regular files, total bytes) under ``folder``, recursively; (0, 0) if absent."""
    files = 0
    total = 0
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            files += 1
            total += os.path.getsize(os.path.join(dirpath, name))
    return files, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate benchmark data deterministically.")
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("big", help="one big random file")
    p.add_argument("path", type=Path)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--seed", type=int, default=DEFAULT_BIG_SEED)
    p = sub.add_parser("small", help="many small random files in ~100 subfolders")
    p.add_argument("folder", type=Path)
    p.add_argument("--count", type=int, default=DEFAULT_SMALL_COUNT)
    p.add_argument("--seed", type=int, default=DEFAULT_SMALL_SEED)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.kind == "big":
        result = make_big_file(args.path, args.size_mib * MIB, args.seed)
    else:
        result = make_small_files(args.folder, args.count, args.seed)
    print(json.dumps({**asdict(result), "seconds": time.perf_counter() - start}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

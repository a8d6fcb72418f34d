"""Content hashes: BLAKE3, hex-encoded, 64 characters.

BLAKE3 is a cryptographic hash (collision-safe, unlike xxh3) that is still fast: several GB/s on
one core, and it parallelises over large files. See the README's design notes for the measured
throughput on this machine.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import blake3

__all__ = ["ALGORITHM", "DIGEST_LENGTH", "hash_bytes", "hash_file", "is_digest"]

ALGORITHM = "blake3"
DIGEST_LENGTH = 64
_DIGEST = re.compile(r"[0-9a-f]{64}")
_PARALLEL_THRESHOLD = 8 << 20  # below this a single thread is faster than spawning workers


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """Return the hex BLAKE3 digest of ``data``."""
    return blake3.blake3(data).hexdigest()


def hash_file(path: str | os.PathLike[str]) -> str:
    """Return the hex BLAKE3 digest of the file at ``path``.

    Large files are memory-mapped and hashed on all cores; small ones are read in one go.
    Raises ``OSError`` when the file cannot be read.
    """
    size = os.stat(path).st_size
    if size >= _PARALLEL_THRESHOLD:
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        hasher.update_mmap(os.fspath(path))
        return hasher.hexdigest()
    return blake3.blake3(Path(path).read_bytes()).hexdigest()


def is_digest(text: str) -> bool:
    """Whether ``text`` is a well-formed molen content digest."""
    return len(text) == DIGEST_LENGTH and _DIGEST.fullmatch(text) is not None

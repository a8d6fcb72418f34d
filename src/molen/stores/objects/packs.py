"""Pack files: many small objects in one file, with a sorted index beside it.

A data set of 20,000 small files would otherwise be 20,000 cache files to create, 20,000 files
to copy to a shared folder and 20,000 requests to S3. Like git, molen stores small objects
packed: ``packs/<name>.pack`` holds their bytes back to back and ``packs/<name>.idx`` lists
(digest, offset, length) sorted by digest, ending in a BLAKE3 checksum of itself. The index is
written after the pack, so a pack becomes visible only once complete, and packs never change
afterwards (gc writes a smaller pack and deletes the old one). Packed objects are verified
against their digest whenever they are read, like loose ones.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import blake3

from molen.errors import CorruptObjectError

__all__ = [
    "PACKS",
    "PACK_MAX_OBJECT",
    "PACK_TARGET",
    "PackLocation",
    "PackWriter",
    "decode_index",
    "encode_index",
]

PACKS = "packs"
PACK_MAX_OBJECT = 1 << 20  # objects up to 1 MiB are packed; larger ones stay loose files
PACK_TARGET = 128 << 20  # a pack is closed once it holds this much
#: a batch of fewer small objects stores them loose: a pack and its index for a run's two
#: small outs would cost as many writes, and every reader of the store lists every pack
PACK_MIN_OBJECTS = 8

PackLocation = tuple[str, int, int]  # pack name, offset, length

_MAGIC = b"molen-pack-index 1\n"
_RECORD = struct.Struct(">32sQQ")
_CHECKSUM = 32


def encode_index(records: Iterable[tuple[str, int, int]]) -> bytes:
    """The index bytes of a pack holding ``records`` (digest, offset, length)."""
    body = b"".join(_RECORD.pack(bytes.fromhex(d), o, n) for d, o, n in sorted(records))
    data = _MAGIC + body
    return data + blake3.blake3(data).digest()


def decode_index(data: bytes, where: str) -> list[tuple[str, int, int]]:
    """The (digest, offset, length) records of an index; :class:`CorruptObjectError` names
    ``where`` if the bytes are not an intact index."""
    body_length = len(data) - len(_MAGIC) - _CHECKSUM
    if (
        not data.startswith(_MAGIC)
        or body_length < 0
        or body_length % _RECORD.size
        or blake3.blake3(data[:-_CHECKSUM]).digest() != data[-_CHECKSUM:]
    ):
        raise CorruptObjectError(
            f"the pack index {where} is damaged; delete it and its .pack file, then push or add "
            "the data again"
        )
    return [(d.hex(), o, n) for d, o, n in _RECORD.iter_unpack(data[len(_MAGIC) : -_CHECKSUM])]


def pack_name(index: bytes) -> str:
    """A pack is named by the hash of its index."""
    return blake3.blake3(index).hexdigest()


class PackWriter:
    """Objects appended to a temporary pack file, until the store installs it."""

    def __init__(self, folder: Path) -> None:
        import tempfile

        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=".pack", dir=folder)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self.records: list[tuple[str, int, int]] = []
        self.size = 0
        self._seen: set[str] = set()

    def add(self, digest: str, data: bytes) -> None:
        """Append one object (once per pack)."""
        if digest in self._seen:
            return
        self._file.write(data)
        self.records.append((digest, self.size, len(data)))
        self.size += len(data)
        self._seen.add(digest)

    def close(self) -> tuple[str, bytes]:
        """Finish the pack file; its name and index bytes."""
        self._file.close()
        index = encode_index(self.records)
        return pack_name(index), index

    def contents(self) -> Iterator[tuple[str, bytes]]:
        """The objects appended so far, as ``(digest, bytes)``."""
        self._file.flush()
        with open(self.path, "rb") as handle:
            for digest, offset, length in self.records:
                handle.seek(offset)
                yield digest, handle.read(length)

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary packs whose writing process is gone (killed mid-write)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if not name.startswith(".tmp-"):
            continue
        try:
            pid = int(name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        (folder / name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

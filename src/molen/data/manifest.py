"""Directory manifests: the listing of a tracked folder, itself stored as an object.

A manifest is canonical JSON (sorted by path, compact), so the same folder content always
gives the same bytes and therefore the same hash: a directory's data version.
"""

from __future__ import annotations

import json
import json.encoder
from functools import cached_property
from typing import NamedTuple

from molen.errors import CorruptObjectError
from molen.hashing import hash_bytes

__all__ = ["Manifest", "ManifestEntry"]


class ManifestEntry(NamedTuple):
    """One file of a tracked folder: its path relative to the folder (POSIX), hash and size.

    A named tuple, not a dataclass: a large folder has tens of thousands, created on every
    read of its manifest, and a tuple is several times cheaper to make."""

    path: str
    digest: str
    size: int


class Manifest:
    """The files of a tracked folder, sorted by path (immutable)."""

    def __init__(self, entries: tuple[ManifestEntry, ...]) -> None:
        self.entries = entries

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and other.entries == self.entries

    def __hash__(self) -> int:
        return hash(self.entries)

    def __repr__(self) -> str:
        return f"Manifest({len(self.entries)} files)"

    @classmethod
    def of(cls, entries: list[ManifestEntry]) -> Manifest:
        return cls(tuple(sorted(entries, key=lambda entry: entry.path)))

    def to_bytes(self) -> bytes:
        return self._bytes

    @cached_property
    def _bytes(self) -> bytes:
        # the bytes json.dumps(..., separators=(",", ":")) gives, written out directly: several
        # times faster for the tens of thousands of entries of a large folder
        quote = json.encoder.encode_basestring_ascii
        rows = ",".join(
            f'{{"path":{quote(e.path)},"digest":"{e.digest}","size":{e.size}}}' for e in self.entries
        )
        return f'{{"manifest":1,"files":[{rows}]}}'.encode()

    @cached_property
    def digest(self) -> str:
        return hash_bytes(self.to_bytes())

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.entries)

    def by_path(self) -> dict[str, ManifestEntry]:
        return {entry.path: entry for entry in self.entries}

    @classmethod
    def from_bytes(cls, data: bytes, *, digest: str = "?") -> Manifest:
        """Parse manifest bytes; :class:`CorruptObjectError` if they are not a manifest."""
        try:
            document = json.loads(data)
            rows = document["files"]
            return cls(tuple([ManifestEntry(r["path"], r["digest"], int(r["size"])) for r in rows]))
        except (ValueError, KeyError, TypeError):
            raise CorruptObjectError(
                f"object {digest} should be a directory manifest but is not; "
                "re-add the folder with `molen data add`"
            ) from None

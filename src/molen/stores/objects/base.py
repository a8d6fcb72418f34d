"""The content-addressed object store: the same bytes are stored once, under their BLAKE3 hash.

A backend implements five primitives on *keys* (``ab/cdef…``, the digest split after two
characters): :meth:`_exists`, :meth:`_write_file`, :meth:`_write_bytes`, :meth:`_read_bytes`,
:meth:`_fetch_file`, plus :meth:`_delete` and :meth:`_keys`. Everything users call (put, get,
verify, listing) is derived here once, so every backend behaves the same and one conformance
suite checks them all.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path

from molen.errors import ConflictError, CorruptObjectError, InvalidValueError, NotFoundError
from molen.hashing import hash_bytes, hash_file, is_digest

__all__ = ["CHUNK_SIZE", "ObjectStore", "changed_while_storing"]

CHUNK_SIZE = 4 << 20


def changed_while_storing(source: Path) -> ConflictError:
    """The error for a file whose bytes changed between hashing and storing."""
    return ConflictError(f"{source} changed while it was being stored; nothing was stored, retry")


class ObjectStore(ABC):
    """Content-addressed storage for data, models and artifacts."""

    def __init__(self, url: str, *, verify: bool = True) -> None:
        self.url = url
        self.verify = verify

    # -- primitives a backend implements ------------------------------------------------------

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _write_file(self, key: str, source: Path, digest: str) -> None:
        """Store the file at ``source`` under ``key`` atomically (all bytes or nothing).

        The bytes are hashed as they are copied; if they do not hash to ``digest`` (the file
        changed since it was hashed) nothing is stored and :func:`changed_while_storing` is
        raised.
        """

    @abstractmethod
    def _write_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically."""

    @abstractmethod
    def _read_bytes(self, key: str) -> bytes:
        """Return the bytes under ``key``; raise ``FileNotFoundError`` if absent."""

    @abstractmethod
    def _fetch_file(self, key: str, destination: Path) -> None:
        """Copy the object under ``key`` to the (temporary) path ``destination``."""

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _keys(self) -> Iterator[str]:
        """Every key in the store, in no particular order."""

    # -- derived operations -------------------------------------------------------------------

    @staticmethod
    def key_of(digest: str) -> str:
        """The key an object is stored under: ``ab/cdef…``."""
        if not is_digest(digest):
            raise InvalidValueError(f"{digest!r} is not a molen content hash (64 hex characters)")
        return f"{digest[:2]}/{digest[2:]}"

    def exists(self, digest: str) -> bool:
        """Whether the object ``digest`` is stored."""
        return self._exists(self.key_of(digest))

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` (once) and return its digest."""
        digest = hash_bytes(data)
        key = self.key_of(digest)
        if not self._exists(key):
            self._write_bytes(key, data)
        return digest

    def put_file(self, path: str | os.PathLike[str], *, digest: str | None = None) -> str:
        """Store the file at ``path`` (once) and return its digest.

        ``digest`` skips hashing when the caller already knows it. The bytes copied are hashed
        again on the way in, so a file that changes while it is stored never lands under the
        wrong hash: :class:`ConflictError` is raised instead and nothing is stored.
        """
        source = Path(path)
        known = hash_file(source) if digest is None else digest
        key = self.key_of(known)
        if self._exists(key):
            return known
        self._write_file(key, source, known)
        return known

    def get_bytes(self, digest: str, *, verify: bool | None = None) -> bytes:
        """Return the bytes of ``digest``, checking the hash unless ``verify`` is false."""
        key = self.key_of(digest)
        try:
            data = self._read_bytes(key)
        except FileNotFoundError:
            raise self._missing(digest) from None
        if (self.verify if verify is None else verify) and hash_bytes(data) != digest:
            raise self._corrupt(digest)
        return data

    def get_file(
        self, digest: str, destination: str | os.PathLike[str], *, verify: bool | None = None
    ) -> Path:
        """Write the object ``digest`` to ``destination`` atomically and return the path."""
        target = Path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                self._fetch_file(self.key_of(digest), tmp)
            except FileNotFoundError:
                raise self._missing(digest) from None
            if (self.verify if verify is None else verify) and hash_file(tmp) != digest:
                raise self._corrupt(digest)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def check(self, digest: str) -> bool:
        """Whether the stored bytes of ``digest`` still match it (False when absent)."""
        try:
            self.get_bytes(digest, verify=True)
        except (CorruptObjectError, NotFoundError):
            return False
        return True

    def remove(self, digest: str) -> None:
        """Delete the object ``digest`` if present."""
        self._delete(self.key_of(digest))

    def digests(self) -> Iterator[str]:
        """Every digest stored, in no particular order."""
        for key in self._keys():
            digest = key.replace("/", "")
            if is_digest(digest):
                yield digest

    def copy_from(self, source: ObjectStore, digest: str) -> None:
        """Copy object ``digest`` from ``source`` into this store, verifying it on arrival.

        A corrupt object at ``source`` raises :class:`CorruptObjectError` and stores nothing.
        """
        with tempfile.TemporaryDirectory(prefix="molen-transfer-") as folder:
            local = source.get_file(digest, Path(folder) / "object", verify=True)
            self.put_file(local, digest=digest)

    def present(self, digests: Iterable[str]) -> set[str]:
        """The digests among ``digests`` that are stored: by listing the store when asking
        for many (one request per thousand objects on S3), else one by one."""
        wanted = set(digests)
        if len(wanted) > 64:
            return wanted & set(self.digests())
        return {digest for digest in wanted if self.exists(digest)}

    def missing(self, digests: Iterable[str]) -> list[str]:
        """The digests among ``digests`` that are not stored."""
        return [digest for digest in digests if not self.exists(digest)]

    def _missing(self, digest: str) -> NotFoundError:
        return NotFoundError(f"object {digest} is not in the object store {self.url}")

    def _corrupt(self, digest: str) -> CorruptObjectError:
        return CorruptObjectError(
            f"object {digest} in {self.url} is corrupt: its bytes no longer match its hash; "
            "delete it and store the original file again"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

"""The object store in a local or shared folder (the default: ``.molen/cache``).

Plain ``os`` calls, no fsspec, so the common case pays no import cost. Objects are written to a
temporary name in the same folder and renamed into place, and made read-only, so neither a
killed process nor a later edit through a link can leave bytes that do not match their hash.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import blake3

from molen.errors import StoreUnavailableError
from molen.hashing import hash_file
from molen.stores.objects.base import CHUNK_SIZE, ObjectStore, changed_while_storing

__all__ = ["LocalObjectStore"]

_READ_ONLY = 0o444


class LocalObjectStore(ObjectStore):
    """Objects as files ``<root>/ab/cdef…``."""

    def __init__(self, root: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        super().__init__(str(self.root), verify=verify)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot create the object store folder {self.root}: {exc.strerror}; "
                "check the path and its permissions (setting objects.url)"
            ) from None

    def path_of(self, digest: str) -> Path:
        """The file holding object ``digest`` (it may not exist)."""
        return self.root / self.key_of(digest)

    def _exists(self, key: str) -> bool:
        return os.path.exists(self.root / key)

    def _temporary(self, key: str) -> tuple[int, Path]:
        folder = self.root / key[:2]
        folder.mkdir(parents=True, exist_ok=True)  # the cache may have been deleted meanwhile
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        return fd, Path(name)

    def _commit(self, tmp: Path, key: str) -> None:
        os.chmod(tmp, _READ_ONLY)
        os.replace(tmp, self.root / key)

    def _write_file(self, key: str, source: Path, digest: str) -> None:
        with open(source, "rb") as src:
            self._write_stream(key, src, source, digest)

    def _write_stream(self, key: str, src: BinaryIO, source: Path, digest: str) -> None:
        fd, tmp = self._temporary(key)
        try:
            hasher = blake3.blake3()
            with os.fdopen(fd, "wb") as dst:
                while chunk := src.read(CHUNK_SIZE):
                    hasher.update(chunk)
                    dst.write(chunk)
            if hasher.hexdigest() != digest:
                raise changed_while_storing(source)
            self._commit(tmp, key)
        finally:
            tmp.unlink(missing_ok=True)

    def copy_from(self, source: ObjectStore, digest: str) -> None:
        """Fetch straight into this folder (temporary name, verify, rename): one write."""
        key = self.key_of(digest)
        fd, tmp = self._temporary(key)
        os.close(fd)
        try:
            try:
                source._fetch_file(key, tmp)
            except FileNotFoundError:
                raise source._missing(digest) from None
            if hash_file(tmp) != digest:
                raise source._corrupt(digest)
            self._commit(tmp, key)
        finally:
            tmp.unlink(missing_ok=True)

    def _write_bytes(self, key: str, data: bytes) -> None:
        fd, tmp = self._temporary(key)
        try:
            with os.fdopen(fd, "wb") as dst:
                dst.write(data)
            self._commit(tmp, key)
        finally:
            tmp.unlink(missing_ok=True)

    def _read_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def _fetch_file(self, key: str, destination: Path) -> None:
        shutil.copyfile(self.root / key, destination)

    def _delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def _keys(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        with os.scandir(self.root) as folders:
            for folder in folders:
                if len(folder.name) != 2 or not folder.is_dir():
                    continue
                with os.scandir(folder.path) as entries:
                    for entry in entries:
                        if not entry.name.startswith("."):
                            yield f"{folder.name}/{entry.name}"

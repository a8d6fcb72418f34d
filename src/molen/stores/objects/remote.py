"""The object store on any other fsspec filesystem: ``gs://``, ``az://``, ``memory://``, …

(``s3://`` has its own backend on boto3, :mod:`molen.stores.objects.s3`.)

Object stores such as S3 make a single PUT atomic: an object appears whole or not at all, so
objects are written directly under their key. Filesystems without that guarantee get a
temporary name and a move. Errors of the storage library are translated here into molen's
errors, without credentials.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3

from molen.errors import MissingDependencyError, MolenError, StoreUnavailableError
from molen.stores.objects.base import CHUNK_SIZE, ObjectStore, changed_while_storing
from molen.stores.objects.packs import PACKS

__all__ = ["FsspecObjectStore"]

# where an upload becomes visible only once complete and can be abandoned (``discard``)
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
_EXTRAS = {"s3": "s3", "s3a": "s3"}


def _filesystem(url: str, storage_options: dict[str, Any]) -> tuple[Any, str, str]:
    import fsspec
    from fsspec.core import split_protocol

    protocol, _ = split_protocol(url)
    protocol = protocol or "file"
    try:
        fs, root = fsspec.core.url_to_fs(url, **storage_options)
    except ImportError:
        extra = _EXTRAS.get(protocol)
        hint = f"pip install 'molen[{extra}]'" if extra else f"install the fsspec backend for {protocol}://"
        raise MissingDependencyError(f"the object store {url} needs an extra package: {hint}") from None
    return fs, root.rstrip("/"), protocol


class FsspecObjectStore(ObjectStore):
    """Objects under ``<url>/ab/cdef…`` on an fsspec filesystem."""

    def __init__(
        self, url: str, *, storage_options: dict[str, Any] | None = None, verify: bool = True
    ) -> None:
        super().__init__(url, verify=verify)
        self.fs, self.root, self.protocol = _filesystem(url, storage_options or {})

    @contextlib.contextmanager
    def _translated(self, *, writing: bool = False) -> Iterator[None]:
        """Turn storage-library errors into molen errors that name the store, not secrets."""
        try:
            yield
        except MolenError:
            raise
        except FileNotFoundError:
            if writing:  # nothing to find when writing: the bucket itself is missing
                raise self._no_bucket() from None
            raise
        except PermissionError:
            raise self._access_denied() from None
        except Exception as exc:
            if "NoCredentialsError" in {type(e).__name__ for e in _chain(exc)}:
                raise self._no_credentials() from None
            if _is_connection_error(exc):
                raise self._unreachable() from None
            if isinstance(exc, OSError):
                raise StoreUnavailableError(
                    f"the object store {self.url} failed: {type(exc).__name__}; "
                    "check that the bucket exists and is writable"
                ) from None
            raise

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _exists(self, key: str) -> bool:
        with self._translated():
            return bool(self.fs.exists(self._path(key)))

    def _target(self, key: str) -> str:
        if self.protocol in _ATOMIC_PUT:
            return self._path(key)
        return self._path(key) + ".tmp-" + blake3.blake3(key.encode()).hexdigest()[:8]

    def _finish(self, written: str, key: str) -> None:
        if written != self._path(key):
            self.fs.mv(written, self._path(key))

    def _write_file(self, key: str, source: Path, digest: str) -> None:
        target = self._target(key)
        with open(source, "rb") as src, self._translated(writing=True):
            hasher = blake3.blake3()
            dst = self.fs.open(target, "wb")
            try:
                while chunk := src.read(CHUNK_SIZE):
                    hasher.update(chunk)
                    dst.write(chunk)
                if hasher.hexdigest() != digest:
                    raise changed_while_storing(source)
            except BaseException:
                _discard(dst)
                if target != self._path(key):  # a temporary name: whatever it holds goes
                    with contextlib.suppress(Exception):
                        self.fs.rm_file(target)
                raise
            dst.close()  # the upload completes (and becomes visible) only here
            self._finish(target, key)

    def _write_bytes(self, key: str, data: bytes) -> None:
        target = self._target(key)
        with self._translated(writing=True):
            self.fs.pipe_file(target, data)
            self._finish(target, key)

    def _read_bytes(self, key: str) -> bytes:
        with self._translated():
            return bytes(self.fs.cat_file(self._path(key)))

    def _fetch_file(self, key: str, destination: Path) -> None:
        with self._translated():
            self.fs.get_file(self._path(key), str(destination))

    def _delete(self, key: str) -> None:
        with self._translated(), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def size_of(self, digest: str) -> int:
        location = self.packed().get(digest)
        if location is not None:
            return location[2]
        with self._translated():
            try:
                return int(self.fs.size(self._path(self.key_of(digest))))
            except FileNotFoundError:
                raise self._missing(digest) from None

    def _list(self, folder: str) -> list[str]:
        with self._translated():
            try:
                found = self.fs.ls(self._path(folder), detail=False, refresh=True)
            except FileNotFoundError:
                return []
        prefix = self.root + "/"
        keys = [path[len(prefix) :] if path.startswith(prefix) else path for path in found]
        return [key for key in keys if ".tmp-" not in key and key != folder]

    def _write_named(self, key: str, source: Path) -> None:
        target = self._target(key)
        with self._translated(writing=True):
            self.fs.put_file(str(source), target)
            self._finish(target, key)

    def _read_range(self, key: str, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        with self._translated():
            return bytes(self.fs.cat_file(self._path(key), start=offset, end=offset + length))

    def _keys(self) -> Iterator[str]:
        with self._translated():
            try:
                found = self.fs.find(self.root)
            except FileNotFoundError:
                return
        prefix = self.root + "/"
        for path in found:
            key = path[len(prefix) :] if path.startswith(prefix) else path
            if ".tmp-" not in key and not key.startswith(f"{PACKS}/"):
                yield key


def _discard(handle: Any) -> None:
    """Abandon an unfinished upload so that nothing becomes visible (where the file system
    allows it; elsewhere the upload went to a temporary name, which the caller deletes)."""
    discard = getattr(handle, "discard", None)
    if discard is not None:
        with contextlib.suppress(Exception):
            discard()
        with contextlib.suppress(AttributeError):
            handle.closed = True  # stop the file object from uploading on garbage collection
    else:
        with contextlib.suppress(Exception):
            handle.close()


def _is_connection_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(
        names
        & {
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ClientConnectorError",
            "ServerDisconnectedError",
            "ConnectionError",
            "ConnectionRefusedError",
        }
    )


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1

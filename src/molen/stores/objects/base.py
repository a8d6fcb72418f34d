"""The content-addressed object store: the same bytes are stored once, under their BLAKE3 hash.

A backend implements a few primitives on *keys* (``ab/cdef…``, the digest split after two
characters, or ``packs/NAME.pack``): :meth:`_exists`, :meth:`_write_file`, :meth:`_write_bytes`,
:meth:`_write_named`, :meth:`_read_bytes`, :meth:`_read_range`, :meth:`_fetch_file`,
:meth:`_delete`, :meth:`_keys` and :meth:`_list`. Everything users call (put, get, verify,
listing, packing many small objects) is derived here once, so every backend behaves the same
and one conformance suite checks them all.

Objects are stored *loose* (one file or S3 object each) or *packed* (see
:mod:`molen.stores.objects.packs`): :meth:`ObjectStore.packing` gathers many small objects into
pack files, which is how data sets of many small files are added, pushed and pulled.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from molen.atomic import write_atomic
from molen.errors import (
    ConflictError,
    CorruptObjectError,
    InvalidValueError,
    NotFoundError,
    StoreUnavailableError,
)
from molen.hashing import hash_bytes, hash_file, is_digest
from molen.stores.objects.packs import (
    PACK_MAX_OBJECT,
    PACK_MIN_OBJECTS,
    PACK_TARGET,
    PACKS,
    PackLocation,
    PackWriter,
    decode_index,
    pack_name,
)

__all__ = ["CHUNK_SIZE", "NAMED", "ObjectStore", "PackBatch", "changed_while_storing"]

NAMED = "named"

CHUNK_SIZE = 4 << 20


def changed_while_storing(source: Path) -> ConflictError:
    """The error for a file whose bytes changed between hashing and storing."""
    return ConflictError(f"{source} changed while it was being stored; nothing was stored, retry")


class ObjectStore(ABC):
    """Content-addressed storage for data, models and artifacts."""

    _ranges_are_cheap = False  # reading part of a pack costs no request (a mapped local file)

    def __init__(self, url: str, *, verify: bool = True) -> None:
        self.url = url
        self.verify = verify
        self._pack_index: dict[str, PackLocation] | None = None
        self._pack_lock = threading.Lock()

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
        """Every loose object's key, in no particular order (not the packs)."""

    @abstractmethod
    def _list(self, folder: str) -> list[str]:
        """The keys directly in ``folder`` (``packs``); empty if there is no such folder."""

    @abstractmethod
    def _write_named(self, key: str, source: Path) -> None:
        """Store the local file ``source`` under ``key`` atomically (it may be moved away)."""

    @abstractmethod
    def _read_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``key`` from ``offset``; ``FileNotFoundError`` if absent."""

    # -- derived operations -------------------------------------------------------------------

    @staticmethod
    def key_of(digest: str) -> str:
        """The key an object is stored under: ``ab/cdef…``."""
        if not is_digest(digest):
            raise InvalidValueError(f"{digest!r} is not a molen content hash (64 hex characters)")
        return f"{digest[:2]}/{digest[2:]}"

    def _index_first(self) -> bool:
        """Whether to look in the pack index before asking for the loose key: always in a
        local store (free), in a remote one once the index is loaded. Until then one request
        for the key beats listing every pack, and what is asked for one by one (a model, a
        data file, a run's outs) is mostly loose."""
        return self._ranges_are_cheap or self._pack_index is not None

    def _known_packed(self) -> dict[str, PackLocation]:
        """The pack index if reading it costs nothing now, else nothing."""
        return self.packed() if self._index_first() else {}

    def exists(self, digest: str) -> bool:
        """Whether the object ``digest`` is stored."""
        key = self.key_of(digest)
        if self._index_first():
            return digest in self.packed() or self._exists(key)
        return self._exists(key) or digest in self.packed()

    def _worth_asking(self, size: int) -> bool:
        """Whether to ask if an object of ``size`` bytes is stored before writing it. Writing
        the same bytes under the same key again is harmless, so a small object goes to a
        remote store in one request instead of two."""
        return self._ranges_are_cheap or size > PACK_MAX_OBJECT

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` (once) and return its digest."""
        digest = hash_bytes(data)
        key = self.key_of(digest)
        if digest in self._known_packed() or (self._worth_asking(len(data)) and self._exists(key)):
            return digest
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
        if known in self._known_packed():
            return known
        if self._worth_asking(os.stat(source).st_size) and self._exists(key):
            return known
        self._write_file(key, source, known)
        return known

    def get_bytes(self, digest: str, *, verify: bool | None = None) -> bytes:
        """Return the bytes of ``digest``, checking the hash unless ``verify`` is false."""
        key = self.key_of(digest)
        checked = self.verify if verify is None else verify
        if not self._index_first():  # a remote store: the loose key first (see _index_first)
            try:
                data = self._read_bytes(key)
            except FileNotFoundError:
                pass
            else:
                if not checked or hash_bytes(data) == digest:
                    return data
        packed = self._read_packed(digest)
        if packed is not None and (not checked or hash_bytes(packed) == digest):
            return packed
        try:  # a loose copy: the only one, or a repaired copy of a damaged packed one
            data = self._read_bytes(key)
        except FileNotFoundError:
            if packed is not None:
                raise self._corrupt(digest) from None
            raise self._missing(digest) from None
        if checked and hash_bytes(data) != digest:
            raise self._corrupt(digest)
        return data

    def get_file(
        self, digest: str, destination: str | os.PathLike[str], *, verify: bool | None = None
    ) -> Path:
        """Write the object ``digest`` to ``destination`` atomically and return the path."""
        import tempfile

        target = Path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        if digest in self._known_packed():  # small: read from its pack (verified), written whole
            write_atomic(target, self.get_bytes(digest, verify=verify))
            return target
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                self._fetch_file(self.key_of(digest), tmp)
            except FileNotFoundError:
                if not self._index_first() and digest in self.packed():  # packed, not loose
                    write_atomic(target, self.get_bytes(digest, verify=verify))
                    return target
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
        """Every digest stored, loose or packed, in no particular order."""
        packed = self.packed()
        yield from packed
        for key in self._keys():
            digest = key.replace("/", "")
            if is_digest(digest) and digest not in packed:
                yield digest

    # -- named entries: small documents found by name, not by hash (the pipeline run cache)

    def put_named(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` (``runcache/3f2a…``), replacing what was there."""
        self._write_bytes(f"{NAMED}/{name}", data)

    def get_named(self, name: str) -> bytes:
        """The entry ``name``; :class:`NotFoundError` if there is none."""
        try:
            return self._read_bytes(f"{NAMED}/{name}")
        except FileNotFoundError:
            raise NotFoundError(f"no entry {name} in the object store {self.url}") from None

    def names(self, prefix: str) -> list[str]:
        """The names of the entries under ``prefix`` (``runcache``)."""
        cut = len(NAMED) + 1
        return [key[cut:] for key in self._list(f"{NAMED}/{prefix}")]

    # -- packs --------------------------------------------------------------------------------

    def packed(self) -> dict[str, PackLocation]:
        """Where each packed object is: digest -> (pack, offset, length). Read once, then kept
        up to date by this process's own writes; :meth:`refresh` re-reads it."""
        index = self._pack_index
        if index is None:
            index = self.refresh()
        return index

    def refresh(self) -> dict[str, PackLocation]:
        """Re-read the pack indexes (another process may have added or removed packs).

        One listing, then only the indexes this machine has not read before: a pack's name
        is the hash of its index, so an index never changes and a remote store's are kept in
        :func:`pack_index_cache` (a team's store gains packs with every run; reading them all
        again made every command slower than the last)."""
        names = [
            key[len(PACKS) + 1 : -len(".idx")] for key in sorted(self._list(PACKS)) if key.endswith(".idx")
        ]
        cache = None if self._ranges_are_cheap else pack_index_cache()
        indexes: dict[str, list[tuple[str, int, int]] | None] = {}
        missing = []
        for name in names:
            records = _cached_index(cache, name) if cache is not None else None
            if records is None:
                missing.append(name)
            indexes[name] = records
        if missing:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(8, len(missing))) as pool:
                for name, data in zip(missing, pool.map(self._read_index, missing), strict=True):
                    if data is None:  # removed meanwhile by a gc
                        continue
                    indexes[name] = decode_index(data, f"{self.url}/{PACKS}/{name}.idx")
                    if cache is not None:
                        _keep_index(cache, name, data)
        index: dict[str, PackLocation] = {}
        for name in names:
            for digest, offset, length in indexes[name] or ():
                index.setdefault(digest, (name, offset, length))
        self._pack_index = index
        return index

    def _read_index(self, name: str) -> bytes | None:
        """The bytes of pack ``name``'s index; None if a gc removed it meanwhile."""
        try:
            return self._read_bytes(f"{PACKS}/{name}.idx")
        except FileNotFoundError:
            return None

    def packs(self) -> dict[str, list[str]]:
        """Every pack and the digests it holds."""
        found: dict[str, list[str]] = defaultdict(list)
        for digest, (name, _, _) in self.packed().items():
            found[name].append(digest)
        return dict(found)

    def packing(self, *, threshold: int = PACK_MAX_OBJECT) -> PackBatch:
        """A batch that stores objects up to ``threshold`` bytes in new packs (and larger ones
        loose); use it as a context manager, from any number of threads."""
        return PackBatch(self, threshold)

    def packed_bytes(self, digests: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """The (unverified) bytes of many packed objects, reading each pack once when many of
        its objects are wanted (one download instead of one request per object)."""
        index = self.packed()
        groups: dict[str, list[str]] = defaultdict(list)
        for digest in digests:
            groups[index[digest][0]].append(digest)
        for name, group in groups.items():
            key = f"{PACKS}/{name}.pack"
            if len(group) > 8 and not self._ranges_are_cheap:
                whole = self._read_bytes(key)
                for digest in group:
                    _, offset, length = index[digest]
                    yield digest, whole[offset : offset + length]
            else:
                for digest in group:
                    _, offset, length = index[digest]
                    yield digest, self._read_range(key, offset, length)

    def _read_packed(self, digest: str) -> bytes | None:
        location = self.packed().get(digest)
        if location is None:
            return None
        name, offset, length = location
        try:
            return self._read_range(f"{PACKS}/{name}.pack", offset, length)
        except FileNotFoundError:  # the pack was rewritten by a gc meanwhile
            location = self.refresh().get(digest)
            if location is None:
                return None
            name, offset, length = location
            return self._read_range(f"{PACKS}/{name}.pack", offset, length)

    def _pack_folder(self) -> Path:
        """Where a new pack is assembled before it is installed (a local temporary folder)."""
        import tempfile

        return Path(tempfile.gettempdir())

    def _install_pack(self, writer: PackWriter) -> None:
        """Make a finished pack visible: the pack first, then its index."""
        name, index = writer.close()
        self._write_named(f"{PACKS}/{name}.pack", writer.path)
        self._write_bytes(f"{PACKS}/{name}.idx", index)
        with self._pack_lock:
            known = self.packed()
            for digest, offset, length in writer.records:
                known.setdefault(digest, (name, offset, length))

    def rewrite_packs(self, keep: set[str], *, dry_run: bool = False) -> tuple[int, int]:
        """Drop packed objects not in ``keep``: packs left with nothing are deleted, others
        rewritten with only what is kept. Returns (objects removed, bytes removed)."""
        removed = removed_bytes = 0
        index = self.refresh()
        for name, digests in self.packs().items():
            drop = [d for d in digests if d not in keep]
            if not drop:
                continue
            removed += len(drop)
            removed_bytes += sum(index[d][2] for d in drop)
            if dry_run:
                continue
            kept = [d for d in digests if d in keep]
            if kept:
                with PackBatch(self, PACK_TARGET, repack=True) as batch:
                    for digest, data in self.packed_bytes(kept):
                        batch.add_bytes(data, digest)
            self._delete(f"{PACKS}/{name}.idx")
            self._delete(f"{PACKS}/{name}.pack")
        self.refresh()
        return removed, removed_bytes

    def copy_from(self, source: ObjectStore, digest: str) -> None:
        """Copy object ``digest`` from ``source`` into this store, verifying it on arrival.

        A corrupt object at ``source`` raises :class:`CorruptObjectError` and stores nothing.
        """
        import tempfile

        if digest in source.packed():
            self._write_bytes(self.key_of(digest), source.get_bytes(digest, verify=True))
            return
        from molen.stores.objects.local import LocalObjectStore

        if isinstance(source, LocalObjectStore):  # upload straight from the cache file, hashed as it streams
            try:
                self._write_file(self.key_of(digest), source.path_of(digest), digest)
            except FileNotFoundError:
                raise source._missing(digest) from None
            except ConflictError:  # the cache file does not hash to its name
                raise source._corrupt(digest) from None
            return
        with tempfile.TemporaryDirectory(prefix="molen-transfer-") as folder:
            local = source.get_file(digest, Path(folder) / "object", verify=True)
            self.put_file(local, digest=digest)

    def present(self, digests: Iterable[str]) -> set[str]:
        """The digests among ``digests`` that are stored: packed ones from the pack indexes,
        loose ones by listing the store when asking for many (one request per thousand
        objects on S3), else one by one."""
        wanted = set(digests)
        packed = self.packed()
        found = {digest for digest in wanted if digest in packed}
        rest = wanted - found
        if len(rest) > 64:
            loose = {key.replace("/", "") for key in self._keys()}
            return found | (rest & loose)
        return found | {digest for digest in rest if self._exists(self.key_of(digest))}

    def missing(self, digests: Iterable[str]) -> list[str]:
        """The digests among ``digests`` that are not stored."""
        return [digest for digest in digests if not self.exists(digest)]

    def size_of(self, digest: str) -> int:
        """The size in bytes of stored object ``digest``."""
        location = self.packed().get(digest)
        if location is not None:
            return location[2]
        return len(self.get_bytes(digest, verify=False))

    # -- the errors every remote backend reports the same way (no credentials in them) ---------

    def _no_bucket(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"cannot write to the object store {self.url}: the bucket does not exist; "
            "create it, or fix objects.url"
        )

    def _access_denied(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"access denied to the object store {self.url}; check the credentials "
            "(AWS_ACCESS_KEY_ID / AWS_PROFILE) and the bucket policy"
        )

    def _no_credentials(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"no credentials for the object store {self.url}; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        )

    def _unreachable(self, what: str = "") -> StoreUnavailableError:
        detail = f" ({what})" if what else ""
        return StoreUnavailableError(
            f"cannot reach the object store {self.url}{detail}; check the URL, the endpoint "
            "(objects.s3_endpoint_url) and the network"
        )

    def _missing(self, digest: str) -> NotFoundError:
        return NotFoundError(f"object {digest} is not in the object store {self.url}")

    def _corrupt(self, digest: str) -> CorruptObjectError:
        return CorruptObjectError(
            f"object {digest} in {self.url} is corrupt: its bytes no longer match its hash; "
            "delete it and store the original file again"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class PackBatch:
    """Objects stored together: small ones appended to new packs, large ones loose.

    On leaving the ``with`` block the open pack is installed, also after an error (what was
    stored so far is intact and a rerun skips it); a killed process leaves only a temporary
    file, which the next batch or ``molen data gc`` deletes.
    """

    def __init__(self, store: ObjectStore, threshold: int, *, repack: bool = False) -> None:
        self.store = store
        self.threshold = threshold
        self.repack = repack  # copying objects out of a pack that is about to go: store them all
        # packed already (updated by our installs); a remote store's index is read when a
        # pack is about to be written, not for a batch that ends up loose (see _install)
        self._known: dict[str, PackLocation] | None = (
            {} if repack else (store.packed() if store._index_first() else None)
        )
        self._writer: PackWriter | None = None
        self._lock = threading.Lock()
        self.stored = 0

    def __enter__(self) -> PackBatch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None or not isinstance(error, OSError):
            self.flush()  # keep what was stored before the error: a rerun skips it
        elif self._writer is not None:
            self._writer.discard()  # a failing disk: do not try to write more
            self._writer = None

    def add_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` (its digest checked if given); returns the digest."""
        actual = hash_bytes(data)
        if digest is not None and actual != digest:
            raise self.store._corrupt(digest)
        self._add(actual, data)
        return actual

    def add_file(self, path: str | os.PathLike[str], *, digest: str | None = None) -> str:
        """Store the file at ``path``; returns its digest. A file that does not hash to a given
        ``digest`` is refused (:class:`ConflictError`), as in :meth:`ObjectStore.put_file`."""
        if os.stat(path).st_size > self.threshold:
            return self.store.put_file(path, digest=digest)
        with open(path, "rb") as handle:
            data = handle.read()
        actual = hash_bytes(data)
        if digest is not None and actual != digest:
            raise changed_while_storing(Path(path))
        self._add(actual, data)
        return actual

    def _add(self, digest: str, data: bytes) -> None:
        if len(data) > self.threshold:
            self.store.key_of(digest)
            if not self.store.exists(digest):
                self.store._write_bytes(self.store.key_of(digest), data)
            return
        if self._known is not None and digest in self._known:
            return
        with self._lock:
            if self._writer is None:
                self._writer = PackWriter(self.store._pack_folder())
            self._writer.add(digest, data)
            self.stored += 1
            if self._writer.size >= PACK_TARGET:
                self._install()

    def flush(self) -> None:
        """Install the open pack now."""
        with self._lock:
            if self._writer is not None:
                self._install()

    def _install(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None or not writer.records:
            if writer is not None:
                writer.discard()
            return
        few = not self.repack and not self.store._ranges_are_cheap  # loose when fewer (remote)
        if self._known is None and not (few and len(writer.records) < PACK_MIN_OBJECTS):
            self._known = self.store.packed()  # a remote store: leave out what its packs hold
            kept = self._without(writer, self._known)
            if kept is None:
                return
            writer = kept
        if few and len(writer.records) < PACK_MIN_OBJECTS:
            try:  # a few small objects in a remote store: loose, each written atomically
                known = self.store._known_packed()
                self._write_loose([(d, data) for d, data in writer.contents() if d not in known])
            finally:
                writer.discard()
            return
        try:
            self.store._install_pack(writer)
        finally:
            writer.path.unlink(missing_ok=True)
        if not self.repack:
            self._known = self.store.packed()

    def _write_loose(self, objects: list[tuple[str, bytes]]) -> None:
        """Write each ``(digest, bytes)`` under its key, side by side (each is a request)."""

        def write(item: tuple[str, bytes]) -> None:
            self.store._write_bytes(self.store.key_of(item[0]), item[1])

        if len(objects) < 2:
            for item in objects:
                write(item)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(objects)) as pool:
            list(pool.map(write, objects))

    def _without(self, writer: PackWriter, known: dict[str, PackLocation]) -> PackWriter | None:
        """``writer``'s objects that ``known`` does not hold, in a new pack (None: none)."""
        if not any(digest in known for digest, _, _ in writer.records):
            return writer
        kept = PackWriter(self.store._pack_folder())
        try:
            for digest, data in writer.contents():
                if digest in known:
                    self.stored -= 1
                else:
                    kept.add(digest, data)
        finally:
            writer.discard()
        if not kept.records:
            kept.discard()
            return None
        return kept


def pack_index_cache() -> Path | None:
    """This machine's folder of pack indexes read from remote stores
    (``$XDG_CACHE_HOME/molen/pack-indexes``, ``MOLEN_PACK_INDEX_CACHE`` to move it, empty to
    turn it off)."""
    chosen = os.environ.get("MOLEN_PACK_INDEX_CACHE")
    if chosen is not None:
        return Path(chosen) if chosen else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "molen" / "pack-indexes"


def _cached_index(cache: Path, name: str) -> list[tuple[str, int, int]] | None:
    """The records of ``name`` kept in ``cache``; None when absent or damaged (read again)."""
    try:
        data = (cache / f"{name}.idx").read_bytes()
    except OSError:
        return None
    if pack_name(data) != name:
        return None
    return decode_index(data, str(cache / f"{name}.idx"))


def _keep_index(cache: Path, name: str, data: bytes) -> None:
    """Keep ``name``'s index in ``cache`` (a cache that cannot be written is skipped)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        write_atomic(cache / f"{name}.idx", data)
    except OSError:
        pass

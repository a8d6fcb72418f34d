"""One conformance suite for the content-addressed object store, run against every backend.

Backends: a local folder and S3 (a real moto server over HTTP). Corruption and removals "behind
the store's back" are done with the backend's own tools (the file system, boto3), never through
the store under test.
"""

from __future__ import annotations

import os
import random
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molen.errors import (
    ConflictError,
    CorruptObjectError,
    InvalidValueError,
    MolenError,
    NotFoundError,
    StoreUnavailableError,
)
from molen.hashing import DIGEST_LENGTH, hash_bytes, hash_file, is_digest
from molen.stores.objects import ObjectStore, open_object_store
from molen.stores.objects.local import LocalObjectStore
from molen.stores.objects.packs import PACK_MIN_OBJECTS

PREFIX = "prefix"
PARALLEL_THRESHOLD = 8 << 20  # molen.hashing._PARALLEL_THRESHOLD


def b3(data: bytes) -> str:
    """The expected digest, computed independently of molen."""
    return blake3.blake3(data).hexdigest()


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    """Names in ``folder`` other than ``keep`` (temporary files a store may have left)."""
    return sorted(name for name in os.listdir(folder) if name not in keep)


# --------------------------------------------------------------------------- backends


class Backend:
    """A store under test plus out-of-band access to its raw storage."""

    name: str
    store: ObjectStore

    def corrupt(self, digest: str, data: bytes) -> None:
        """Overwrite the stored bytes of ``digest`` with ``data`` without going through the store."""
        raise NotImplementedError

    def delete_behind(self, digest: str) -> None:
        """Delete the object ``digest`` as another client would."""
        raise NotImplementedError

    def raw_keys(self) -> list[str]:
        """Every key physically present in the storage (including any temporary ones)."""
        raise NotImplementedError


class LocalBackend(Backend):
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = open_object_store(str(root))

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:]

    def corrupt(self, digest: str, data: bytes) -> None:
        path = self.path(digest)
        path.chmod(0o644)
        path.write_bytes(data)
        path.chmod(0o444)

    def delete_behind(self, digest: str) -> None:
        self.path(digest).unlink()

    def raw_keys(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def corrupt_packed(self, digest: str) -> None:
        name, offset, _ = LocalObjectStore(self.root).packed()[digest]
        pack = self.root / "packs" / f"{name}.pack"
        pack.chmod(0o644)
        data = bytearray(pack.read_bytes())
        data[offset] ^= 0xFF
        pack.write_bytes(bytes(data))

    def damage_index(self) -> None:
        (index,) = (self.root / "packs").glob("*.idx")
        index.chmod(0o644)
        index.write_bytes(index.read_bytes()[:-1] + b"?")


class S3Backend(Backend):
    name = "s3"

    def __init__(self, endpoint: str, bucket: str) -> None:
        import boto3

        self.bucket = bucket
        self.endpoint = endpoint
        self.client: Any = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.store = open_object_store(f"s3://{bucket}/{PREFIX}", s3_endpoint_url=endpoint)

    def key(self, digest: str) -> str:
        return f"{PREFIX}/{digest[:2]}/{digest[2:]}"

    def corrupt(self, digest: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data)

    def delete_behind(self, digest: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    def raw_keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def corrupt_packed(self, digest: str) -> None:
        name, offset, _ = self.store.packed()[digest]
        key = f"{PREFIX}/packs/{name}.pack"
        data = bytearray(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        data[offset] ^= 0xFF
        self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))

    def damage_index(self) -> None:
        (key,) = [k for k in self.raw_keys() if k.endswith(".idx")]
        data = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data[:-1] + b"?")


class FsspecBackend(Backend):
    """The generic fsspec backend (``gs://``, ``az://``…), on fsspec's in-memory file system."""

    name = "fsspec"

    def __init__(self, root: str) -> None:
        import fsspec

        from molen.stores.objects.remote import FsspecObjectStore

        self.fs = fsspec.filesystem("memory")
        self.root = root
        self.store = FsspecObjectStore(f"memory://{root}")

    def _path(self, key: str) -> str:
        return f"/{self.root}/{key}"

    def corrupt(self, digest: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(f"{digest[:2]}/{digest[2:]}"), data)

    def delete_behind(self, digest: str) -> None:
        self.fs.rm_file(self._path(f"{digest[:2]}/{digest[2:]}"))

    def raw_keys(self) -> list[str]:
        if not self.fs.exists(f"/{self.root}"):
            return []
        return sorted(path[len(self.root) + 2 :] for path in self.fs.find(f"/{self.root}"))

    def corrupt_packed(self, digest: str) -> None:
        name, offset, _ = self.store.packed()[digest]
        path = self._path(f"packs/{name}.pack")
        data = bytearray(self.fs.cat_file(path))
        data[offset] ^= 0xFF
        self.fs.pipe_file(path, bytes(data))

    def damage_index(self) -> None:
        (path,) = [p for p in self.fs.find(f"/{self.root}") if p.endswith(".idx")]
        self.fs.pipe_file(path, self.fs.cat_file(path)[:-1] + b"?")


@pytest.fixture(
    params=[pytest.param("local"), pytest.param("s3", marks=pytest.mark.s3), pytest.param("fsspec")],
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return LocalBackend(tmp_path / "store")
    if request.param == "fsspec":
        import uuid

        return FsspecBackend(f"molen-{uuid.uuid4().hex[:12]}")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket: str = request.getfixturevalue("s3_bucket")
    return S3Backend(endpoint, bucket)


@pytest.fixture
def store(backend: Backend) -> ObjectStore:
    return backend.store


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A folder for files read back out of the store."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------- conformance


def test_put_bytes_returns_blake3_digest(store: ObjectStore) -> None:
    data = b"the same bytes are stored once"
    digest = store.put_bytes(data)
    assert digest == b3(data)
    assert store.exists(digest)
    assert store.get_bytes(digest) == data


def test_put_file_returns_blake3_digest(store: ObjectStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    digest = store.put_file(source)
    assert digest == b3(data)
    assert store.exists(digest)
    assert store.get_bytes(digest) == data
    assert source.read_bytes() == data  # the source is left alone


def test_put_file_accepts_str_path_and_known_digest(store: ObjectStore, tmp_path: Path) -> None:
    data = b"known digest"
    source = tmp_path / "f.txt"
    source.write_bytes(data)
    assert store.put_file(str(source), digest=b3(data)) == b3(data)
    assert store.get_bytes(b3(data)) == data


def test_same_bytes_are_stored_once(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    data = b"dedup me"
    source = tmp_path / "copy.bin"
    source.write_bytes(data)
    first = store.put_bytes(data)
    second = store.put_bytes(data)
    third = store.put_file(source)
    assert first == second == third == b3(data)
    assert list(store.digests()) == [first]
    assert len(backend.raw_keys()) == 1


def test_exists_is_false_for_an_absent_object(store: ObjectStore) -> None:
    store.put_bytes(b"something else")
    assert not store.exists(b3(b"never stored"))


def test_get_file_writes_destination_and_creates_parents(store: ObjectStore, out: Path) -> None:
    data = b"artifact bytes\n" * 1000
    digest = store.put_bytes(data)
    destination = out / "deep" / "er" / "model.pkl"
    returned = store.get_file(digest, destination)
    assert returned == destination
    assert destination.read_bytes() == data
    # written atomically: no temporary file left next to the destination
    assert leftovers(destination.parent, {"model.pkl"}) == []


def test_get_file_replaces_an_existing_destination(store: ObjectStore, out: Path) -> None:
    destination = out / "f.bin"
    destination.write_bytes(b"old content that is longer than the new one")
    digest = store.put_bytes(b"new")
    store.get_file(digest, str(destination))
    assert destination.read_bytes() == b"new"
    assert leftovers(out, {"f.bin"}) == []


def test_remove(store: ObjectStore) -> None:
    keep = store.put_bytes(b"keep")
    gone = store.put_bytes(b"gone")
    store.remove(gone)
    assert not store.exists(gone)
    assert store.exists(keep)
    assert list(store.digests()) == [keep]
    with pytest.raises(NotFoundError):
        store.get_bytes(gone)
    store.remove(gone)  # removing an absent object is not an error
    assert store.exists(keep)


def test_digests_lists_every_object_once(store: ObjectStore) -> None:
    assert list(store.digests()) == []
    payloads = [f"object {i}".encode() for i in range(7)]
    expected = {store.put_bytes(p) for p in payloads}
    store.put_bytes(payloads[0])
    listed = list(store.digests())
    assert len(listed) == len(payloads)
    assert set(listed) == expected
    assert all(is_digest(d) for d in listed)


def test_missing_returns_only_absent_digests_in_order(store: ObjectStore) -> None:
    present = [store.put_bytes(b"a"), store.put_bytes(b"b")]
    absent = [b3(b"x"), b3(b"y")]
    asked = [absent[0], present[0], absent[1], present[1]]
    assert store.missing(asked) == absent
    assert store.missing(present) == []
    assert store.missing([]) == []
    assert store.missing(iter(absent)) == absent


def test_missing_object_raises_not_found(store: ObjectStore, out: Path) -> None:
    digest = b3(b"not there")
    with pytest.raises(NotFoundError, match=digest):
        store.get_bytes(digest)
    destination = out / "sub" / "x.bin"
    with pytest.raises(NotFoundError, match=digest):
        store.get_file(digest, destination)
    assert not destination.exists()
    assert leftovers(destination.parent, set()) == []
    assert store.check(digest) is False


BAD_DIGESTS = [
    "",
    "abc",
    "A" * DIGEST_LENGTH,  # upper case is not a molen digest
    "g" * DIGEST_LENGTH,
    "0" * (DIGEST_LENGTH - 1),
    "0" * (DIGEST_LENGTH + 1),
    "0" * DIGEST_LENGTH + "\n",
    "../" + "0" * (DIGEST_LENGTH - 3),
]

OPERATIONS: dict[str, Callable[[ObjectStore, str, Path], object]] = {
    "exists": lambda s, d, p: s.exists(d),
    "get_bytes": lambda s, d, p: s.get_bytes(d),
    "get_file": lambda s, d, p: s.get_file(d, p / "dest"),
    "remove": lambda s, d, p: s.remove(d),
    "missing": lambda s, d, p: s.missing([d]),
    "check": lambda s, d, p: s.check(d),
    "put_file": lambda s, d, p: s.put_file(p / "src", digest=d),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("bad", BAD_DIGESTS, ids=[repr(b)[:12] for b in BAD_DIGESTS])
def test_invalid_digest_raises_invalid_value(
    store: ObjectStore, tmp_path: Path, operation: str, bad: str
) -> None:
    (tmp_path / "src").write_bytes(b"x")
    with pytest.raises(InvalidValueError, match="content hash"):
        OPERATIONS[operation](store, bad, tmp_path)
    assert not (tmp_path / "dest").exists()
    assert list(store.digests()) == []


def test_corrupt_object_is_detected(backend: Backend, out: Path) -> None:
    store = backend.store
    good = store.put_bytes(b"good object")
    digest = store.put_bytes(b"original bytes")
    backend.corrupt(digest, b"tampered bytes")

    with pytest.raises(CorruptObjectError, match=digest):
        store.get_bytes(digest)
    with pytest.raises(CorruptObjectError):
        store.get_bytes(digest, verify=True)
    assert store.check(digest) is False
    assert store.check(good) is True

    # get_file must not leave a partial (or corrupt) destination behind
    fresh = out / "new" / "file.bin"
    with pytest.raises(CorruptObjectError):
        store.get_file(digest, fresh)
    assert not fresh.exists()
    assert leftovers(fresh.parent, set()) == []

    # ... nor clobber a destination that was already there
    existing = out / "existing.bin"
    existing.write_bytes(b"precious")
    with pytest.raises(CorruptObjectError):
        store.get_file(digest, existing)
    assert existing.read_bytes() == b"precious"
    assert leftovers(out, {"existing.bin", "new"}) == []


def test_verify_false_returns_stored_bytes_unchecked(backend: Backend, out: Path) -> None:
    store = backend.store
    digest = store.put_bytes(b"original")
    backend.corrupt(digest, b"changed!")
    assert store.get_bytes(digest, verify=False) == b"changed!"
    assert store.get_file(digest, out / "f", verify=False).read_bytes() == b"changed!"
    # the store-wide default can be switched off as well, and a call can switch it back on
    store.verify = False
    assert store.get_bytes(digest) == b"changed!"
    with pytest.raises(CorruptObjectError):
        store.get_bytes(digest, verify=True)
    assert store.check(digest) is False  # check always verifies


def test_empty_bytes(store: ObjectStore, tmp_path: Path, out: Path) -> None:
    digest = store.put_bytes(b"")
    assert digest == b3(b"")
    assert store.exists(digest)
    assert store.get_bytes(digest) == b""
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert store.put_file(empty) == digest
    assert store.get_file(digest, out / "e").read_bytes() == b""
    assert store.check(digest) is True
    assert list(store.digests()) == [digest]


@pytest.mark.slow
def test_large_file_round_trip(store: ObjectStore, tmp_path: Path, out: Path) -> None:
    data = random.Random(7).randbytes(20 << 20)  # above the parallel-hash threshold
    assert len(data) > PARALLEL_THRESHOLD
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    digest = store.put_file(source)
    assert digest == b3(data)
    back = store.get_file(digest, out / "big.bin")
    assert back.stat().st_size == len(data)
    assert hash_file(back) == digest
    assert back.read_bytes() == data
    assert store.get_bytes(digest) == data


def test_put_file_that_changed_while_stored_raises_conflict(backend: Backend, tmp_path: Path) -> None:
    """Simulated: the digest the caller passes is of other bytes than the file now holds."""
    store = backend.store
    source = tmp_path / "moving.bin"
    source.write_bytes(b"bytes on disk now")
    stale = b3(b"bytes when hashed")
    with pytest.raises(ConflictError, match="changed while it was being stored"):
        store.put_file(source, digest=stale)
    assert not store.exists(stale)
    assert not store.exists(b3(b"bytes on disk now"))
    assert list(store.digests()) == []
    assert backend.raw_keys() == []


def test_exists_sees_an_object_removed_by_another_client(backend: Backend) -> None:
    """A shared store is changed by others: after a listing, a removal must still be seen,
    otherwise put_bytes skips the upload and the bytes are silently not stored."""
    store = backend.store
    digest = store.put_bytes(b"shared object")
    assert list(store.digests()) == [digest]
    backend.delete_behind(digest)
    assert not store.exists(digest)
    store.put_bytes(b"shared object")
    assert store.get_bytes(digest) == b"shared object"


def _many(count: int, seed: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    blobs = [rng.randbytes(rng.randint(0, 3000)) for _ in range(count)]
    return {b3(blob): blob for blob in blobs}


def test_a_batch_packs_small_objects_into_few_files(backend: Backend) -> None:
    store = backend.store
    objects = _many(300)
    big = os.urandom(3 << 20)
    with store.packing() as batch:
        for digest, blob in objects.items():
            assert batch.add_bytes(blob) == digest
        assert batch.add_bytes(big) == b3(big)  # above the threshold: stored loose
    keys = backend.raw_keys()
    assert len(keys) == 3  # one pack, its index, and the large object
    assert sum(key.endswith(".pack") for key in keys) == 1
    for digest, blob in objects.items():
        assert store.exists(digest) and store.get_bytes(digest) == blob
    assert set(store.digests()) == {*objects, b3(big)}
    assert store.present([*objects, "0" * 64]) == set(objects)
    fresh = open_object_store(store.url, s3_endpoint_url=getattr(backend, "endpoint", None))
    assert dict(fresh.packed_bytes(objects)) == objects  # another client reads the same packs


def test_a_batch_of_a_few_small_objects_stores_them_loose_in_a_remote_store(backend: Backend) -> None:
    store = backend.store
    objects = _many(PACK_MIN_OBJECTS - 1, seed=5)
    with store.packing() as batch:
        for blob in objects.values():
            batch.add_bytes(blob)
    packs = [key for key in backend.raw_keys() if key.startswith("packs/")]
    if isinstance(backend, LocalBackend):  # reading a local pack costs nothing: packed as ever
        assert len(packs) == 2 and set(store.packed()) == set(objects)
    else:  # no pack and index for a run's two small outs: every reader lists the packs
        assert packs == [] and store.packed() == {}
        assert len(backend.raw_keys()) == len(objects)
    assert all(store.get_bytes(digest) == blob for digest, blob in objects.items())


@pytest.fixture(params=[pytest.param("s3", marks=pytest.mark.s3), pytest.param("fsspec")])
def remote(request: pytest.FixtureRequest) -> Backend:
    if request.param == "fsspec":
        import uuid

        return FsspecBackend(f"molen-{uuid.uuid4().hex[:12]}")
    return S3Backend(request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket"))


def _counting(store: ObjectStore) -> list[str]:
    """The requests ``store`` makes from now on, by primitive."""
    made: list[str] = []
    for name in ("_exists", "_read_bytes", "_write_bytes", "_write_file", "_fetch_file", "_list", "_keys"):
        method = getattr(store, name)

        def counted(*args: Any, __method: Any = method, __name: str = name, **kwargs: Any) -> Any:
            made.append(__name)
            return __method(*args, **kwargs)

        setattr(store, name, counted)
    return made


def _fresh(backend: Backend) -> ObjectStore:
    """Another client of the same store (its own, empty view of the packs)."""
    return open_object_store(backend.store.url, s3_endpoint_url=getattr(backend, "endpoint", None))


def test_a_remote_store_answers_one_by_one_requests_without_listing_its_packs(
    remote: Backend, tmp_path: Path
) -> None:
    packed = _many(PACK_MIN_OBJECTS + 4, seed=6)
    with remote.store.packing() as batch:
        for blob in packed.values():
            batch.add_bytes(blob)
    model = os.urandom(2 << 20)
    big = remote.store.put_bytes(model)

    store = _fresh(remote)  # a new process: what a run's outs and a checkout cost
    made = _counting(store)
    small = store.put_bytes(b"metrics of one run")
    assert made == ["_write_bytes"]  # one PUT: the same bytes again under their hash are harmless
    made.clear()
    assert store.put_bytes(model) == big and made == ["_exists"]  # a large one is asked for first
    made.clear()
    assert store.get_bytes(small) == b"metrics of one run" and store.exists(big)
    store.get_file(big, tmp_path / "model.bin")
    assert (tmp_path / "model.bin").read_bytes() == model
    assert "_list" not in made  # loose objects: no listing of every pack
    # a packed object is still found: the index is read once, when a loose key is missing
    victim, blob = next(iter(packed.items()))
    assert store.get_bytes(victim) == blob and store.exists(victim)
    store.get_file(victim, tmp_path / "packed.bin")
    assert (tmp_path / "packed.bin").read_bytes() == blob
    assert made.count("_list") == 1


def test_a_batch_in_a_fresh_client_packs_nothing_already_packed(remote: Backend) -> None:
    objects = _many(PACK_MIN_OBJECTS * 2, seed=7)
    with remote.store.packing() as batch:
        for blob in objects.values():
            batch.add_bytes(blob)
    packs = [key for key in remote.raw_keys() if key.endswith(".pack")]
    store = _fresh(remote)
    again = store.packing()
    with again:
        for blob in objects.values():
            again.add_bytes(blob)
        again.add_bytes(b"one more, " * 3)
    assert again.stored == 1
    assert [key for key in remote.raw_keys() if key.endswith(".pack")] == packs  # no second copy
    assert store.get_bytes(b3(b"one more, " * 3)) == b"one more, " * 3


def test_a_batch_left_by_an_error_keeps_what_was_stored(backend: Backend) -> None:
    store = backend.store
    objects = _many(20, seed=1)
    with pytest.raises(RuntimeError), store.packing() as batch:
        for blob in objects.values():
            batch.add_bytes(blob)
        raise RuntimeError("interrupted")
    assert all(store.get_bytes(digest) == blob for digest, blob in objects.items())
    again = store.packing()
    with again:
        for blob in objects.values():
            again.add_bytes(blob)
    assert again.stored == 0  # nothing stored twice


def test_a_damaged_packed_object_is_named_and_a_loose_copy_repairs_it(backend: Backend) -> None:
    store = backend.store
    objects = _many(12, seed=2)
    with store.packing() as batch:
        for blob in objects.values():
            batch.add_bytes(blob)
    victim = next(digest for digest, blob in objects.items() if len(blob) > 10)
    backend.corrupt_packed(victim)
    with pytest.raises(CorruptObjectError, match=victim):
        store.get_bytes(victim)
    assert not store.check(victim)
    store._write_bytes(store.key_of(victim), objects[victim])  # what `fetch --force` writes
    assert store.get_bytes(victim) == objects[victim]


def test_a_damaged_pack_index_is_refused_by_name(backend: Backend) -> None:
    store = backend.store
    with store.packing() as batch:
        for blob in _many(PACK_MIN_OBJECTS, seed=4).values():
            batch.add_bytes(blob)
    backend.damage_index()
    with pytest.raises(CorruptObjectError, match=r"pack index .*\.idx is damaged"):
        store.refresh()


@pytest.mark.s3
def test_a_remote_stores_pack_indexes_are_read_once_per_machine(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLEN_PACK_INDEX_CACHE", str(tmp_path / "indexes"))
    writer = S3Backend(s3_endpoint, s3_bucket).store
    objects = {}
    for seed in range(3):  # three commands, three packs
        batch_objects = _many(10, seed=10 + seed)
        with writer.packing() as batch:
            for blob in batch_objects.values():
                batch.add_bytes(blob)
        objects.update(batch_objects)
    reads: list[str] = []

    def fresh() -> ObjectStore:
        store = open_object_store(writer.url, s3_endpoint_url=s3_endpoint)
        read = store._read_bytes

        def counted(key: str) -> bytes:
            reads.append(key)
            return read(key)

        store._read_bytes = counted  # type: ignore[method-assign]
        return store

    first = fresh()
    assert set(first.packed()) == set(objects)
    assert sum(key.endswith(".idx") for key in reads) == 3
    reads.clear()
    second = fresh()  # the next command on this machine: one listing, no index read again
    assert set(second.packed()) == set(objects)
    assert not [key for key in reads if key.endswith(".idx")]
    assert all(second.get_bytes(digest) == blob for digest, blob in objects.items())

    # a damaged copy in the cache is read again from the store, never trusted
    (victim,) = list((tmp_path / "indexes").glob("*.idx"))[:1]
    victim.write_bytes(victim.read_bytes()[:-1] + b"?")
    reads.clear()
    assert set(fresh().packed()) == set(objects)
    assert [key for key in reads if key.endswith(".idx")] == [f"packs/{victim.name}"]
    # a pack rewritten by a gc is gone from the listing, so from the index, cached or not
    keep = set(list(objects)[:5])
    writer.rewrite_packs(keep)
    assert set(fresh().packed()) == keep


def test_rewriting_packs_keeps_exactly_what_is_referenced(backend: Backend) -> None:
    store = backend.store
    objects = _many(50, seed=3)
    with store.packing() as batch:
        for blob in objects.values():
            batch.add_bytes(blob)
    keep = set(list(objects)[:20])
    dry = store.rewrite_packs(keep, dry_run=True)
    assert dry[0] == 30 and set(store.digests()) == set(objects)
    removed, removed_bytes = store.rewrite_packs(keep)
    assert removed == 30 and removed_bytes == sum(len(objects[d]) for d in set(objects) - keep)
    assert set(store.digests()) == keep
    assert all(store.get_bytes(digest) == objects[digest] for digest in keep)
    assert store.rewrite_packs(set())[0] == 20 and backend.raw_keys() == []


def test_local_killed_batch_leaves_only_a_temporary_the_next_batch_removes(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "store"
    script = (
        "import os, sys\n"
        "from molen.stores.objects.local import LocalObjectStore\n"
        f"batch = LocalObjectStore({str(root)!r}).packing()\n"
        "batch.add_bytes(b'half a pack')\n"
        "os._exit(9)\n"  # dies without installing the pack, like kill -9
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    store = LocalObjectStore(root)
    assert list(store.digests()) == []
    assert [p.name[:5] for p in (root / "packs").iterdir()] == [".tmp-"]
    with store.packing() as batch:
        batch.add_bytes(b"whole")
    assert not [p for p in (root / "packs").iterdir() if p.name.startswith(".tmp-")]
    assert store.get_bytes(b3(b"whole")) == b"whole"


def test_open_object_store_picks_the_backend(backend: Backend) -> None:
    store = backend.store
    if isinstance(backend, LocalBackend):
        assert isinstance(store, LocalObjectStore)
        assert store.url == str(backend.root.resolve())
    elif isinstance(backend, S3Backend):
        from molen.stores.objects.s3 import S3ObjectStore

        assert isinstance(store, S3ObjectStore)
        assert store.url == f"s3://{backend.bucket}/{PREFIX}"
    else:
        from molen.stores.objects.remote import FsspecObjectStore

        assert isinstance(store, FsspecObjectStore)
        assert open_object_store(store.url).url == store.url
    assert store.url in repr(store)


# --------------------------------------------------------------------------- local only


@pytest.fixture
def local(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "store")


def test_local_objects_are_read_only(local: LocalBackend, tmp_path: Path) -> None:
    from_bytes = local.store.put_bytes(b"from bytes")
    source = tmp_path / "src"
    source.write_bytes(b"from a file")
    from_file = local.store.put_file(source)
    for digest in (from_bytes, from_file):
        assert stat.S_IMODE(local.path(digest).stat().st_mode) == 0o444


def test_local_put_leaves_no_temporary_files(local: LocalBackend, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.write_bytes(b"file")
    digests = {local.store.put_bytes(b"bytes"), local.store.put_file(source)}
    raw = local.raw_keys()
    assert not [key for key in raw if ".tmp-" in key]
    assert raw == sorted(f"{d[:2]}/{d[2:]}" for d in digests)


@pytest.mark.parametrize("direct", [True, False], ids=["direct-io", "page-cache"])
def test_local_large_file_is_copied_and_hashed_in_one_pass(
    local: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    import molen.stores.objects.local as local_module

    if not direct:  # a file system without direct I/O (tmpfs, macOS…)
        monkeypatch.setattr(local_module, "_copy_direct", lambda source, target: None)
    data = random.Random(5).randbytes((9 << 20) + 1234)  # several chunks and a ragged tail
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    digest = local.store.put_file(source)
    assert digest == b3(data)
    assert local.path(digest).read_bytes() == data
    assert not local.path(digest).stat().st_mode & 0o222
    assert os.listdir(local.root / ".incoming") == []


def test_local_large_file_changing_while_copied_is_refused(local: LocalBackend, tmp_path: Path) -> None:
    data = b"z" * (6 << 20)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    with pytest.raises(ConflictError, match="changed while"):
        local.store.put_file(source, digest=b3(b"what it held when it was hashed"))
    assert list(local.store.digests()) == [] and os.listdir(local.root / ".incoming") == []


def test_local_conflict_stores_nothing_and_leaves_no_temporary_file(
    local: LocalBackend, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.write_bytes(b"now")
    with pytest.raises(ConflictError, match=re.escape(str(source))):
        local.store.put_file(source, digest=b3(b"then"))
    assert local.raw_keys() == []


def test_local_store_url_forms(tmp_path: Path) -> None:
    by_path = open_object_store(str(tmp_path / "a"))
    by_url = open_object_store(f"file://{tmp_path / 'b'}")
    assert isinstance(by_path, LocalObjectStore)
    assert isinstance(by_url, LocalObjectStore)
    assert by_url.root == (tmp_path / "b").resolve()
    assert (tmp_path / "b").is_dir()  # created on open
    digest = by_url.put_bytes(b"x")
    assert (tmp_path / "b" / digest[:2] / digest[2:]).read_bytes() == b"x"


def test_local_store_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a folder")
    with pytest.raises(StoreUnavailableError, match=r"objects\.url"):
        open_object_store(str(blocker / "store"))


def test_local_digests_ignores_foreign_files(local: LocalBackend) -> None:
    digest = local.store.put_bytes(b"real")
    (local.root / "README").write_text("not an object")
    (local.root / "zz").mkdir()
    (local.root / "zz" / "junk").write_text("not a digest")
    (local.root / digest[:2] / ".tmp-abandoned").write_text("half written")
    (local.root / "longname").mkdir()
    assert list(local.store.digests()) == [digest]


def test_local_put_file_of_a_missing_file(local: LocalBackend, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    with pytest.raises((FileNotFoundError, NotFoundError)):
        local.store.put_file(missing)
    assert local.raw_keys() == []


def test_local_put_file_of_a_missing_file_leaks_no_descriptor(local: LocalBackend, tmp_path: Path) -> None:
    """With a known digest the source is opened only after the temporary file is created."""
    missing = tmp_path / "no-such-file"

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    for i in range(20):
        with pytest.raises((FileNotFoundError, NotFoundError)):
            local.store.put_file(missing, digest=b3(str(i).encode()))
    assert open_fds() - before < 5
    assert local.raw_keys() == []


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.binary(max_size=64 << 10))
def test_property_put_get_round_trip(local: LocalBackend, data: bytes) -> None:
    digest = local.store.put_bytes(data)
    assert digest == hash_bytes(data) == b3(data)
    assert local.store.get_bytes(digest) == data
    assert local.store.exists(digest)
    assert local.store.put_bytes(data) == digest  # idempotent


# --------------------------------------------------------------------------- S3 only


def test_s3_unreachable_endpoint(s3_endpoint: str, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/{PREFIX}"
    store = open_object_store(url, s3_endpoint_url="http://127.0.0.1:9")
    digest = b3(b"x")
    for operation in (lambda: store.exists(digest), lambda: store.get_bytes(digest)):
        with pytest.raises(StoreUnavailableError) as info:
            operation()
        message = str(info.value)
        assert url in message
        assert "\n" not in message
        assert "testing" not in message  # neither the access key nor the secret
        assert "objects.s3_endpoint_url" in message


@pytest.fixture
def no_bucket_store(s3_endpoint: str) -> Iterator[tuple[ObjectStore, str]]:
    import uuid

    url = f"s3://molen-missing-{uuid.uuid4().hex[:8]}/{PREFIX}"
    yield open_object_store(url, s3_endpoint_url=s3_endpoint), url


def test_s3_missing_bucket_read_is_not_found(no_bucket_store: tuple[ObjectStore, str]) -> None:
    store, url = no_bucket_store
    with pytest.raises(NotFoundError, match=re.escape(url)):
        store.get_bytes(b3(b"x"))


@pytest.mark.parametrize("operation", ["put_bytes", "put_file"])
def test_s3_missing_bucket_write_is_a_clear_molen_error(
    no_bucket_store: tuple[ObjectStore, str], tmp_path: Path, operation: str
) -> None:
    store, url = no_bucket_store
    source = tmp_path / "f"
    source.write_bytes(b"payload")
    with pytest.raises(MolenError) as info:
        if operation == "put_bytes":
            store.put_bytes(b"payload")
        else:
            store.put_file(source)
    assert isinstance(info.value, (StoreUnavailableError, NotFoundError))
    assert url in str(info.value)


# --------------------------------------------------------------------------- hashing


@pytest.mark.parametrize(
    "size",
    [0, 1, 4096, PARALLEL_THRESHOLD - 1, PARALLEL_THRESHOLD, PARALLEL_THRESHOLD + 1, 9 << 20],
)
def test_hash_file_equals_hash_bytes(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hash_file(path) == hash_bytes(data) == b3(data)
    assert hash_file(str(path)) == b3(data)
    assert hash_bytes(bytearray(data)) == hash_bytes(memoryview(data)) == b3(data)


def test_hash_file_of_a_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        hash_file(tmp_path / "missing")


def test_hash_is_sensitive_to_every_byte() -> None:
    assert hash_bytes(b"a") != hash_bytes(b"b")
    assert hash_bytes(b"") != hash_bytes(b"\0")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b3(b"x"), True),
        ("0" * 64, True),
        ("0123456789abcdef" * 4, True),
        ("0123456789ABCDEF" * 4, False),
        ("", False),
        ("0" * 63, False),
        ("0" * 65, False),
        ("0" * 63 + "g", False),
        ("0" * 64 + "\n", False),
        (" " + "0" * 63, False),
        ("٠" * 64, False),  # Arabic-Indic digits are \d in Unicode regexes but not hex
    ],
)
def test_is_digest(text: str, expected: bool) -> None:
    assert is_digest(text) is expected

"""``molen data push``, ``fetch`` and ``pull``: move only the missing objects, in parallel.

Every object lands atomically (temporary name and rename, or one S3 PUT) and is verified
against its hash on the way, so an interrupted transfer leaves nothing half-written and a
rerun sends only what is still missing: transfers resume by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from molen.data.manifest import Manifest
from molen.data.parallel import run_parallel
from molen.data.remotes import open_remote
from molen.data.tracked import DataSession, TrackedPath
from molen.errors import ConflictError, CorruptObjectError, NotFoundError
from molen.hashing import hash_bytes
from molen.progress import SILENT, Progress
from molen.stores.objects.base import ObjectStore
from molen.stores.objects.packs import PACK_MAX_OBJECT

__all__ = ["TransferResult", "fetch", "pull", "push"]


@dataclass(frozen=True)
class TransferResult:
    """What a transfer did: the remote, objects sent or received, objects already there."""

    remote: str
    transferred: int
    already_present: int


def _objects(session: DataSession, tracked: list[TrackedPath], store: ObjectStore) -> set[str]:
    """Every object the tracked paths need: pointer hashes, manifests and their files."""
    needed: set[str] = set()
    for item in tracked:
        needed.add(item.pointer.hash)
        if item.pointer.kind == "directory":
            data = store.get_bytes(item.pointer.hash)
            manifest = Manifest.from_bytes(data, digest=item.pointer.hash)
            needed.update(entry.digest for entry in manifest.entries)
    return needed


def _copy_all(
    digests: list[str], source: ObjectStore, target: ObjectStore, jobs: int, progress: Progress, verb: str
) -> list[str]:
    """Copy ``digests`` from ``source`` to ``target`` in parallel; return the corrupt ones."""
    corrupt: list[str] = []

    def one(digest: str) -> None:
        try:
            target.copy_from(source, digest)
        except (CorruptObjectError, ConflictError):
            corrupt.append(digest)

    progress.start(verb, len(digests))
    try:
        run_parallel(digests, one, jobs=jobs, progress=progress)
    finally:
        progress.finish()
    return corrupt


def _copy_packed(
    digests: list[str],
    source: ObjectStore,
    target: ObjectStore,
    progress: Progress,
    *,
    loose: bool = False,
) -> list[str]:
    """Copy small objects into new packs of ``target``, reading each pack of ``source`` once;
    every object is verified on the way. ``loose``: store them as loose objects instead (a
    repair, which must not be shadowed by a damaged packed copy). Returns the corrupt ones."""
    corrupt: list[str] = []
    in_packs = [digest for digest in digests if digest in source.packed()]
    packed = set(in_packs)
    with target.packing() as batch:
        for digest, data in source.packed_bytes(in_packs):
            if hash_bytes(data) != digest:
                try:  # a loose copy may have repaired it
                    data = source.get_bytes(digest)
                except CorruptObjectError:
                    corrupt.append(digest)
                    progress.advance()
                    continue
            if loose:
                target._write_bytes(target.key_of(digest), data)
            else:
                batch.add_bytes(data, digest)
            progress.advance()
        for digest in digests:
            if digest in packed:
                continue
            try:
                data = source.get_bytes(digest)
            except CorruptObjectError:
                corrupt.append(digest)
            else:
                if loose:
                    target._write_bytes(target.key_of(digest), data)
                else:
                    batch.add_bytes(data, digest)
            progress.advance()
    return corrupt


def _transfer(
    digests: list[str],
    source: ObjectStore,
    target: ObjectStore,
    jobs: int,
    progress: Progress,
    verb: str,
    *,
    loose: bool = False,
) -> list[str]:
    """Copy ``digests`` from ``source`` to ``target``: small objects packed together, large
    ones one by one in parallel. Returns the digests found corrupt at ``source``."""
    small = [digest for digest in digests if source.size_of(digest) <= PACK_MAX_OBJECT]
    large = sorted(set(digests) - set(small))
    progress.start(verb, len(digests))
    try:
        corrupt = _copy_packed(small, source, target, progress, loose=loose) if small else []
    finally:
        progress.finish()
    if large:
        corrupt += _copy_all(large, source, target, jobs, progress, f"{verb} (large files)")
    return corrupt


def _sync_named(source: ObjectStore, target: ObjectStore, prefix: str) -> None:
    """Copy the named entries under ``prefix`` that ``target`` lacks (run cache entries)."""
    have = set(target.names(prefix))
    for name in source.names(prefix):
        if name not in have:
            target.put_named(name, source.get_named(name))


def _run_cache() -> str:
    from molen.pipeline.repro import RUN_CACHE

    return RUN_CACHE


def _lock_outs(session: DataSession) -> list[TrackedPath]:
    from molen.pipeline.lock import lock_outs

    return lock_outs(session.project.root)


def pipeline_outs(session: DataSession) -> list[TrackedPath]:
    """The pipeline's outs: what molen.lock records and every execution its run cache remembers."""
    from molen.pipeline.repro import run_cache_outs

    return [*_lock_outs(session), *run_cache_outs(session.cache)]


def push(
    session: DataSession,
    paths: list[str] | None = None,
    *,
    remote: str | None = None,
    jobs: int | None = None,
    progress: Progress = SILENT,
) -> TransferResult:
    """Send the objects of the tracked paths that the remote lacks. A whole-project push also
    sends the pipeline's outs the cache holds and its run cache entries."""
    config, store = open_remote(session.project, remote)
    everything = not paths
    tracked = session.tracked(paths)
    if everything:
        tracked += [t for t in pipeline_outs(session) if session.cache.exists(t.pointer.hash)]
    try:
        needed = _objects(session, tracked, session.cache)
    except NotFoundError as exc:
        raise NotFoundError(f"{exc}; add the data again with `molen data add`") from None
    local = session.cache.present(needed)
    if local != needed:
        missing = sorted(needed - local)
        raise NotFoundError(
            f"{len(missing)} object(s) are not in the local cache (e.g. {missing[0][:12]}); "
            "pull them first, or re-add the data with `molen data add`"
        )
    todo = sorted(needed - store.present(needed))
    corrupt = _transfer(todo, session.cache, store, jobs or session.jobs, progress, f"push to {config.name}")
    if corrupt:
        raise CorruptObjectError(
            f"{len(corrupt)} object(s) in the local cache are corrupt (e.g. {corrupt[0][:12]}) and were "
            "not pushed; repair them with `molen data fetch --force` or re-add the data"
        )
    if everything:  # after the objects the entries point to
        _sync_named(session.cache, store, _run_cache())
    return TransferResult(config.name, len(todo), len(needed) - len(todo))


def fetch(
    session: DataSession,
    paths: list[str] | None = None,
    *,
    remote: str | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: Progress = SILENT,
) -> TransferResult:
    """Bring the objects of the tracked paths into the local cache (``force``: even if present,
    to replace corrupt copies). A whole-project fetch also brings the pipeline's run cache
    entries and the outs they and molen.lock name."""
    config, store = open_remote(session.project, remote)
    tracked = session.tracked(paths)
    if not paths:
        _sync_named(store, session.cache, _run_cache())  # first: the outs to fetch include theirs
        tracked += pipeline_outs(session)
    jobs = jobs or session.jobs
    manifests = sorted({t.pointer.hash for t in tracked if t.pointer.kind == "directory"})
    first = manifests if force else sorted(set(manifests) - session.cache.present(manifests))
    bad = _transfer(first, store, session.cache, jobs, SILENT, "manifests", loose=True)
    if bad:
        raise _remote_corrupt(config.name, bad)
    needed = _objects(session, tracked, session.cache)
    todo = sorted(needed if force else needed - session.cache.present(needed))
    absent = sorted(set(todo) - store.present(todo))
    if absent:
        raise NotFoundError(
            f"{len(absent)} object(s) are not on the remote {config.name} (e.g. {absent[0][:12]}); "
            "whoever added that data has to `molen data push` it"
        )
    bad = _transfer(todo, store, session.cache, jobs, progress, f"fetch from {config.name}", loose=force)
    if bad:
        raise _remote_corrupt(config.name, bad)
    fetched = len(set(todo) | set(first))
    return TransferResult(config.name, fetched, len(needed) - fetched)


def pull(
    session: DataSession,
    paths: list[str] | None = None,
    *,
    remote: str | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: Progress = SILENT,
) -> tuple[TransferResult, list[str]]:
    """Fetch, then check out: the workspace ends up matching the pointers (and, for the whole
    project, the outs molen.lock records)."""
    result = fetch(session, paths, remote=remote, jobs=jobs, progress=progress)
    outs: tuple[TrackedPath, ...] = () if paths else tuple(_lock_outs(session))
    changed = session.checkout(paths, force=force, progress=progress, extra=outs)
    return result, changed


def _remote_corrupt(remote: str, digests: list[str]) -> CorruptObjectError:
    return CorruptObjectError(
        f"{len(digests)} object(s) on the remote {remote} are corrupt (e.g. {digests[0][:12]}); nothing "
        "corrupt entered the cache. Push them again from a good copy (`molen data push`), or re-add the data"
    )

"""``molen data gc``: remove cache objects nothing refers to any more.

Kept: every object a pointer names — in the workspace, at HEAD, or (``all_commits``) in any
commit of any branch — the outs of the pipeline (molen.lock, and every execution its run cache
remembers), the files of those folders' manifests, and every object a recorded run refers to
(artifacts, data inputs). A referenced manifest missing from the cache makes gc
refuse, since it could not know which files that folder still needs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from molen.data.history import _git, pointers_at
from molen.data.lock import data_lock
from molen.data.manifest import Manifest
from molen.data.pointer import Pointer
from molen.data.tracked import DataSession
from molen.errors import NotFoundError, UsageError

__all__ = ["GcResult", "collect_garbage"]


@dataclass(frozen=True)
class GcResult:
    removed: int
    removed_bytes: int
    kept: int
    dry_run: bool


def _referenced(session: DataSession, all_commits: bool) -> set[str]:
    root = session.project.root
    pointers: list[Pointer] = [t.pointer for t in session.tracked()]
    if (root / ".git").exists():
        revisions = ["HEAD"]
        if all_commits:
            revisions = _git(root, "rev-list", "--all").decode().split()
        for revision in revisions:
            try:
                pointers.extend(pointers_at(root, revision).values())
            except UsageError:  # an empty repository has no HEAD yet
                if revision != "HEAD":
                    raise
    from molen.data.transfer import pipeline_outs

    pointers += [t.pointer for t in pipeline_outs(session)]  # molen.lock's and the run cache's
    keep = {p.hash for p in pointers}
    for pointer in {p.hash: p for p in pointers if p.kind == "directory"}.values():
        data = session.cache.get_bytes(pointer.hash) if session.cache.exists(pointer.hash) else None
        if data is None:
            raise NotFoundError(
                f"the manifest {pointer.hash[:12]} of a tracked folder is not in the cache, so gc "
                "cannot tell which files it needs; `molen data fetch` first (nothing was removed)"
            )
        keep.update(entry.digest for entry in Manifest.from_bytes(data, digest=pointer.hash).entries)
    keep |= session.workspace.metadata.referenced_digests()
    return keep


def collect_garbage(session: DataSession, *, all_commits: bool = False, dry_run: bool = False) -> GcResult:
    """Remove unreferenced cache objects (or, with ``dry_run``, count them).

    Only a local cache: an object store shared by other projects (``objects.url`` on S3) holds
    objects this project cannot know about, so gc refuses to touch it.
    """
    from molen.stores.objects.local import LocalObjectStore

    if not isinstance(session.cache, LocalObjectStore):
        raise UsageError(
            f"gc cleans a local cache, and objects.url is {session.cache.url}, which other projects "
            "may share; clean shared storage with its own lifecycle rules instead"
        )
    with data_lock(session.project.state_dir, timeout=session.lock_timeout):
        keep = _referenced(session, all_commits)
        removed = 0
        removed_bytes = 0
        kept = 0
        cache = session.cache
        packed = cache.refresh()
        for digest in list(cache.digests()):
            if digest in keep:
                kept += 1
                continue
            if digest in packed:
                continue  # packs are rewritten below
            with contextlib.suppress(OSError):
                removed_bytes += cache.path_of(digest).stat().st_size
            if not dry_run:
                cache.remove(digest)
            removed += 1
        from_packs, from_packs_bytes = cache.rewrite_packs(keep, dry_run=dry_run)
    return GcResult(removed + from_packs, removed_bytes + from_packs_bytes, kept, dry_run)

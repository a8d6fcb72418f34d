"""Reading tracked data from Python, as of any git revision.

    import molen

    frame = pandas.read_csv(molen.data.path("data/raw.csv", rev="v1.0"))
    with molen.data.open("data/raw.csv") as handle: ...
    text = molen.data.read_text("data/labels.txt", rev="HEAD~3")

``path`` may be a tracked file or a file inside a tracked folder. Bytes come from the cache,
or from the default remote when the cache lacks them (verified on arrival).
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import IO, Any

from molen.data.manifest import Manifest
from molen.data.pointer import POINTER_SUFFIX, Pointer, read_pointer
from molen.data.tracked import DataSession
from molen.errors import NotFoundError, UsageError

__all__ = ["open", "path", "read_bytes", "read_text"]


def _pointer_for(session: DataSession, relative: str, rev: str | None) -> tuple[str, Pointer]:
    """The tracked path containing ``relative`` and its pointer (at ``rev``, or in the workspace)."""
    parts = relative.split("/")
    if rev is None:
        for end in range(len(parts), 0, -1):
            candidate = "/".join(parts[:end])
            pointer_file = session.absolute(candidate + POINTER_SUFFIX)
            if pointer_file.is_file():
                return candidate, read_pointer(pointer_file)
    else:
        from molen.data.history import pointers_at

        at = pointers_at(session.project.root, rev)
        for end in range(len(parts), 0, -1):
            candidate = "/".join(parts[:end])
            if candidate in at:
                return candidate, at[candidate]
    where = f"at {rev}" if rev else "in the workspace"
    raise NotFoundError(f"{relative} is not tracked data {where}; `molen data ls` shows what is")


def _ensure_cached(session: DataSession, digest: str) -> None:
    if session.cache.exists(digest):
        return
    from molen.data.remotes import open_remote

    try:
        _, remote = open_remote(session.project)
    except UsageError:
        raise NotFoundError(
            f"object {digest[:12]} is not in the cache and no remote is configured to fetch it from"
        ) from None
    session.cache.copy_from(remote, digest)


def _object_of(session: DataSession, relative: str, rev: str | None) -> str:
    tracked, pointer = _pointer_for(session, relative, rev)
    _ensure_cached(session, pointer.hash)
    if tracked == relative:
        if pointer.kind == "directory":
            raise UsageError(f"{relative} is a folder; name a file inside it")
        return pointer.hash
    manifest = Manifest.from_bytes(session.cache.get_bytes(pointer.hash), digest=pointer.hash)
    inner = relative[len(tracked) + 1 :]
    entry = manifest.by_path().get(inner)
    if entry is None:
        raise NotFoundError(f"{tracked} has no file {inner}" + (f" at {rev}" if rev else ""))
    _ensure_cached(session, entry.digest)
    return entry.digest


def path(name: str | Path, rev: str | None = None) -> Path:
    """A local path holding the tracked file ``name`` as of git revision ``rev`` (default: the
    version its pointer names now). The file is the cache's read-only copy: do not modify it."""
    session = DataSession.current()
    digest = _object_of(session, session.relative(name), rev)
    local = getattr(session.cache, "path_of", None)
    if local is not None and digest not in session.cache.packed():
        result: Path = local(digest)
        return result
    target = session.project.state_dir / "materialized" / digest
    if not target.exists():
        session.cache.get_file(digest, target)
    return target


def read_bytes(name: str | Path, rev: str | None = None) -> bytes:
    """The bytes of tracked file ``name`` as of ``rev``, verified against their hash."""
    session = DataSession.current()
    return session.cache.get_bytes(_object_of(session, session.relative(name), rev))


def read_text(name: str | Path, rev: str | None = None, encoding: str = "utf-8") -> str:
    """The text of tracked file ``name`` as of ``rev``."""
    return read_bytes(name, rev).decode(encoding)


def open(name: str | Path, rev: str | None = None, mode: str = "rb", **kwargs: Any) -> IO[Any]:
    """Open tracked file ``name`` as of ``rev`` for reading (``"rb"`` or ``"r"``)."""
    if mode not in {"rb", "r"}:
        raise UsageError(f"tracked data opens for reading only ('rb' or 'r'), not {mode!r}")
    return builtins.open(path(name, rev), mode, **kwargs)

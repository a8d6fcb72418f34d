"""Tracked data through git history: pointers at a revision, ``molen data diff`` and ``log``.

Pointer files are read straight from git's object database (``git ls-tree`` and one
``git cat-file --batch``), so no checkout is needed to compare revisions.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from molen.data.manifest import Manifest
from molen.data.pointer import POINTER_SUFFIX, Pointer
from molen.data.tracked import DataSession
from molen.errors import InvalidValueError, NotFoundError, UsageError
from molen.progress import SILENT

__all__ = ["Change", "LogEntry", "diff", "log", "pointers_at"]

WORKSPACE = "workspace"


def _git(root: Path, *args: str, data: bytes | None = None) -> bytes:
    try:
        result = subprocess.run(["git", *args], cwd=root, input=data, capture_output=True, check=False)
    except FileNotFoundError:
        raise UsageError("git is not installed; molen's data history needs it") from None
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise UsageError(f"git {' '.join(args[:2])}: {message[-1] if message else 'failed'}")
    return result.stdout


def _read_blobs(root: Path, blobs: list[str]) -> list[bytes]:
    """The contents of git blobs, read in one ``git cat-file --batch``."""
    if not blobs:
        return []
    output = _git(root, "cat-file", "--batch", data=("\n".join(blobs) + "\n").encode())
    contents = []
    position = 0
    for _ in blobs:
        header_end = output.index(b"\n", position)
        header = output[position:header_end]
        if header.endswith(b" missing"):
            contents.append(b"")
            position = header_end + 1
            continue
        size = int(header.split()[2])
        start = header_end + 1
        contents.append(output[start : start + size])
        position = start + size + 1
    return contents


def pointers_at(root: Path, rev: str) -> dict[str, Pointer]:
    """Every tracked path and its pointer as committed at git revision ``rev``."""
    listing = _git(root, "ls-tree", "-r", "-z", rev)
    entries: list[tuple[str, str]] = []
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, name = record.partition(b"\t")
        path = name.decode()
        if path.endswith(POINTER_SUFFIX) and path.rsplit("/", 1)[-1] != POINTER_SUFFIX:
            entries.append((path[: -len(POINTER_SUFFIX)], meta.split()[2].decode()))
    blobs = _read_blobs(root, [blob for _, blob in entries])
    found = {}
    for (path, _), blob in zip(entries, blobs, strict=True):
        try:
            found[path] = Pointer.from_text(
                blob.decode(errors="replace"), where=f"{rev}:{path}{POINTER_SUFFIX}"
            )
        except InvalidValueError:
            continue  # a file that merely ends in .molen
    return found


def _workspace_pointers(session: DataSession, manifests: dict[str, Manifest]) -> dict[str, Pointer]:
    """What the workspace holds now for every tracked path (hashing only changed files);
    the manifests of its folders are added to ``manifests`` by hash."""
    found = {}
    for tracked in session.tracked():
        current = session._current(tracked.path, SILENT, store=False)
        if current is not None:
            found[tracked.path] = current[0]
            if current[1] is not None:
                manifests[current[0].hash] = current[1]
    return found


@dataclass(frozen=True)
class Change:
    """One path that differs: ``added``, ``deleted`` or ``modified``, with its sizes."""

    path: str
    change: str
    old_size: int | None
    new_size: int | None


def _files(
    session: DataSession, path: str, pointer: Pointer, known: dict[str, Manifest]
) -> dict[str, tuple[str, int]] | None:
    if pointer.kind == "file":
        return {path: (pointer.hash, pointer.size)}
    manifest = known.get(pointer.hash) or session._manifest(pointer.hash, missing_ok=True)
    if manifest is None:
        return None
    return {f"{path}/{e.path}": (e.digest, e.size) for e in manifest.entries}


def diff(session: DataSession, old: str | None = None, new: str | None = None) -> list[Change]:
    """Files added, deleted and modified between revision ``old`` (default HEAD) and ``new``
    (default: the workspace). Inside tracked folders the change is per file when the
    folder's manifests are in the cache, else for the folder as a whole."""
    root = session.project.root
    before = pointers_at(root, old or "HEAD")
    known: dict[str, Manifest] = {}
    after = _workspace_pointers(session, known) if new in (None, WORKSPACE) else pointers_at(root, new)
    changes: list[Change] = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path), after.get(path)
        if a is not None and b is not None and a.hash == b.hash:
            continue
        old_files = _files(session, path, a, known) if a else {}
        new_files = _files(session, path, b, known) if b else {}
        if old_files is None or new_files is None:
            changes.append(Change(path, _kind(a, b), a.size if a else None, b.size if b else None))
            continue
        for name in sorted(set(old_files) | set(new_files)):
            x, y = old_files.get(name), new_files.get(name)
            if x == y:
                continue
            kind = "added" if x is None else "deleted" if y is None else "modified"
            changes.append(Change(name, kind, x[1] if x else None, y[1] if y else None))
    return changes


def _kind(a: Pointer | None, b: Pointer | None) -> str:
    return "added" if a is None else "deleted" if b is None else "modified"


@dataclass(frozen=True)
class LogEntry:
    """One version of a tracked path: the commit that recorded it and the runs that used it."""

    commit: str
    date: str
    author: str
    subject: str
    pointer: Pointer
    runs: list[str]


def log(session: DataSession, path: str) -> list[LogEntry]:
    """The versions of ``path`` through git history, newest first, with the runs that used each."""
    relative = session.relative(path)
    root = session.project.root
    output = _git(
        root, "log", "--format=%H%x1f%ad%x1f%an%x1f%s", "--date=short", "--", relative + POINTER_SUFFIX
    ).decode()
    commits = [line.split("\x1f") for line in output.splitlines() if line]
    if not commits:
        raise NotFoundError(f"{relative}{POINTER_SUFFIX} has no history in git yet; commit it first")
    names = [f"{commit[0]}:{relative}{POINTER_SUFFIX}" for commit in commits]
    store = session.workspace.metadata
    entries = []
    for (commit, date, author, subject), blob in zip(commits, _read_blobs(root, names), strict=True):
        if not blob:
            continue  # the commit that deleted the pointer
        pointer = Pointer.from_text(blob.decode(), where=f"{commit[:8]}:{relative}{POINTER_SUFFIX}")
        entries.append(LogEntry(commit, date, author, subject, pointer, store.runs_using(pointer.hash)))
    return entries

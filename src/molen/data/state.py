"""The state cache: which content hash a workspace file had when molen last saw it.

Keyed by (path, inode, size, mtime in ns): while all four match, the file has not changed and
is not hashed again. A local SQLite file (``.molen/state.db``), separate from the metadata
store, because it describes this checkout only.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from molen.data.pointer import Pointer

__all__ = ["StateCache", "signature"]

Signature = tuple[int, int, int]  # inode, size, mtime_ns


def signature(stat: os.stat_result) -> Signature:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _setup(connection: sqlite3.Connection, *statements: str, patience: float = 30.0) -> None:
    """Run the setup ``statements``, waiting out other processes setting up the same file:
    switching a new database to WAL answers "database is locked" at once, without SQLite's busy
    timeout, when two processes do it together."""
    deadline = time.monotonic() + patience
    for statement in statements:
        while True:
            try:
                connection.execute(statement)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


class StateCache:
    """Remembered hashes of workspace files; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        _setup(
            self._connection,
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=OFF",  # a cache: losing it only costs rehashing
            "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, inode INTEGER, size INTEGER, "
            "mtime_ns INTEGER, digest TEXT)",
            "CREATE TABLE IF NOT EXISTS folders (path TEXT PRIMARY KEY, listing TEXT, kind TEXT, "
            "digest TEXT, size INTEGER, files INTEGER)",
        )
        self._lock = threading.Lock()

    def folder(self, path: str) -> tuple[str, Pointer] | None:
        """The listing hash a tracked folder had when its version was last computed, and that
        version."""
        from molen.data.pointer import Pointer

        with self._lock:
            row = self._connection.execute(
                "SELECT listing, kind, digest, size, files FROM folders WHERE path = ?", (path,)
            ).fetchone()
        return None if row is None else (row[0], Pointer(row[1], row[2], row[3], row[4]))

    def remember_folder(self, path: str, listing: str, pointer: Pointer) -> None:
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO folders VALUES (?, ?, ?, ?, ?, ?)",
                (path, listing, pointer.kind, pointer.hash, pointer.size, pointer.files),
            )

    def lookup_prefix(self, prefix: str) -> dict[str, tuple[Signature, str]]:
        """Every remembered file whose path starts with ``prefix`` (``data/`` for a folder)."""
        upper = prefix + "\U0010ffff"
        with self._lock:
            rows = self._connection.execute(
                "SELECT path, inode, size, mtime_ns, digest FROM hashes WHERE path >= ? AND path < ?",
                (prefix, upper),
            ).fetchall()
        return {row[0]: ((row[1], row[2], row[3]), row[4]) for row in rows}

    def lookup(self, path: str) -> tuple[Signature, str] | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT inode, size, mtime_ns, digest FROM hashes WHERE path = ?", (path,)
            ).fetchone()
        return None if row is None else ((row[0], row[1], row[2]), row[3])

    def remember(self, rows: Iterable[tuple[str, Signature, str]]) -> None:
        """Record (path, signature, digest) for many files in one transaction."""
        values = [(path, sig[0], sig[1], sig[2], digest) for path, sig, digest in rows]
        if not values:
            return
        with self._lock:
            self._connection.execute("BEGIN")
            self._connection.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)", values)
            self._connection.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._connection.close()

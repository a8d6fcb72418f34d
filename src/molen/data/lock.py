"""The project's data lock: one molen process changes the workspace and cache at a time.

An advisory ``flock`` on ``.molen/data.lock``: the kernel releases it when its owner exits,
even on ``kill -9``, so an aborted command never leaves a lock that blocks the next one. The
file holds the owner's pid and command line, for the message a waiting process shows.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from molen.errors import ConflictError

__all__ = ["data_lock"]


@contextlib.contextmanager
def data_lock(state_dir: Path, *, timeout: float) -> Iterator[None]:
    """Hold the data lock of a project, waiting up to ``timeout`` seconds for another holder."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "data.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                    raise ConflictError(
                        f"the project's data is locked by {holder}; wait for it to finish, "
                        "or stop it (a killed process releases the lock by itself)"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({' '.join(sys.argv)[:200]})".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock

"""Atomic file writes: a temporary name in the same folder, then one rename.

A reader sees the old file or the new one, never half of either, and a killed process leaves
at most a hidden ``.NAME.molen-tmp…`` file, never a damaged ``NAME``.
"""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> os.stat_result:
    """Replace ``path`` with ``data`` atomically (file mode ``mode``); returns the new file's stat."""
    target = os.fspath(path)
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.molen-tmp{os.getpid()}-{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            info = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return info

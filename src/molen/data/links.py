"""Putting cached objects into the workspace: reflink, hardlink, symlink or copy.

The default ``reflink,copy`` is the safe fastest: a reflink (copy-on-write clone, on XFS,
Btrfs, APFS…) costs nothing and an edit cannot touch the cache; where the filesystem has no
reflinks, a copy. ``hardlink`` and ``symlink`` save space and time but share the cache's
bytes: those files are read-only (the cache objects are), so an edit fails instead of
corrupting the cache; `molen data unprotect PATH` makes a private writable copy.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from molen.errors import UsageError

__all__ = ["STRATEGIES", "link_file", "parse_strategies"]

STRATEGIES = ("reflink", "hardlink", "symlink", "copy")
_FICLONE = 0x40049409
unsupported_strategies: set[tuple[str, int]] = set()  # (strategy, device) pairs that failed


def parse_strategies(text: str) -> tuple[str, ...]:
    """``"reflink,copy"`` -> ("reflink", "copy"); unknown names are refused."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in STRATEGIES]
    if not names or unknown:
        raise UsageError(
            f"data.link {text!r}: use one or more of {', '.join(STRATEGIES)} separated by commas"
        )
    return names


def _reflink(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())


def _place(strategy: str, source: Path, target: Path) -> None:
    import shutil

    if strategy == "reflink":
        _reflink(source, target)
        os.chmod(target, 0o644)
    elif strategy == "hardlink":
        os.link(source, target)
    elif strategy == "symlink":
        os.symlink(source, target)
    else:
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)


def link_file(source: Path, target: Path, strategies: tuple[str, ...]) -> str:
    """Make ``target`` hold the cached object ``source`` by the first strategy that works.

    Atomic: the result appears under a temporary name first, then replaces ``target``.
    Returns the strategy used.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    device = os.stat(target.parent).st_dev
    tmp = target.with_name(f".{target.name}.molen-tmp{os.getpid()}")
    for strategy in strategies:
        if (strategy, device) in unsupported_strategies:
            continue
        try:
            tmp.unlink(missing_ok=True)
            _place(strategy, source, tmp)
            os.replace(tmp, target)
            return strategy
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in {
                errno.EOPNOTSUPP,
                errno.EXDEV,
                errno.EINVAL,
                errno.ENOTTY,
                errno.EPERM,
                errno.EMLINK,
            }:
                unsupported_strategies.add((strategy, device))
                continue
            raise
    raise UsageError(
        f"none of the link strategies {', '.join(strategies)} works for {target}; add 'copy' to data.link"
    )

"""What a run records about where it ran: code version, command, interpreter, host, packages.

Captured once per process and reused by every run it starts: the code a process runs was
loaded when it started, so its commit, diff and packages cannot change under it.
"""

from __future__ import annotations

import getpass
import os
import platform
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from molen.hashing import hash_bytes

__all__ = ["CodeState", "Environment", "code_state", "environment", "package_snapshot"]

_lock = threading.Lock()
_code_states: dict[Path, CodeState | None] = {}
_environment: Environment | None = None
_packages: bytes | None = None


@dataclass(frozen=True)
class CodeState:
    """The git state of the code: commit, branch, and a hash of uncommitted changes."""

    commit: str
    branch: str
    dirty: bool
    diff_hash: str | None
    diff: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Environment:
    """The process: its command line, Python, host, user, pid and pid start time."""

    command: str
    python: str
    host: str
    user: str
    pid: int
    pid_started: float | None


def _git(root: Path, *args: str) -> bytes | None:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def _capture_code(root: Path) -> CodeState | None:
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return None
    branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or b"").decode().strip()
    diff = _git(root, "diff", "HEAD", "--binary") or b""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z") or b""
    dirty = bool(diff or untracked)
    changes = diff + (b"\0untracked\0" + untracked if untracked else b"")
    return CodeState(
        commit=head.decode().strip(),
        branch=branch,
        dirty=dirty,
        diff_hash=hash_bytes(changes) if dirty else None,
        diff=diff,
    )


def code_state(start: Path | None = None) -> CodeState | None:
    """The git state of the repository holding ``start`` (default: cwd), or ``None``."""
    folder = (start or Path.cwd()).resolve()
    with _lock:
        if folder in _code_states:
            return _code_states[folder]
    state = _capture_code(folder)
    with _lock:
        _code_states[folder] = state
    return state


def _process_start_time(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


def environment() -> Environment:
    """The current process's command line, Python version, host and user."""
    global _environment
    if _environment is None:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
        _environment = Environment(
            command=" ".join(
                [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
            ),
            python=f"{platform.python_implementation()} {platform.python_version()}",
            host=socket.gethostname(),
            user=user,
            pid=os.getpid(),
            pid_started=_process_start_time(os.getpid()),
        )
    return _environment


def package_snapshot() -> bytes:
    """``name==version`` of every installed distribution, one a line, sorted."""
    global _packages
    if _packages is None:
        from importlib import metadata

        lines = set()
        for dist in metadata.distributions():
            name = dist.metadata["Name"] if dist.metadata else None
            if name:
                lines.add(f"{name}=={dist.version}")
        _packages = ("\n".join(sorted(lines, key=str.lower)) + "\n").encode()
    return _packages


def reset_after_fork() -> None:
    """Forget what was captured (a forked child has another pid)."""
    global _environment
    _environment = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reset_after_fork)

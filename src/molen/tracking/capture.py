"""What a run records about where it ran: code version, command, interpreter, host, packages.

Captured once per process and reused by every run it starts: the code a process runs was
loaded when it started, so its commit, diff and packages cannot change under it.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from molen.hashing import hash_bytes

__all__ = [
    "CODE_ENV",
    "CodeState",
    "Environment",
    "code_state",
    "describe",
    "environment",
    "package_snapshot",
]

#: set for a process that runs a trial on a cluster, in an unpacked copy of the project without
#: ``.git``: the git state of the code the sweep sent (see :func:`describe`), which its runs
#: record as a local trial's runs record the repository's
CODE_ENV = "MOLEN_CODE_STATE"

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
    #: (digest, size) of the diff in the object store, when it was stored by another process
    diff_object: tuple[str, int] | None = None


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


def describe(state: CodeState, diff_digest: str | None) -> str:
    """``state`` as the text of :data:`CODE_ENV`; ``diff_digest``: its diff, already stored."""
    diff = [diff_digest, len(state.diff)] if diff_digest else None
    fields = {"commit": state.commit, "branch": state.branch, "dirty": state.dirty}
    return json.dumps({**fields, "diff_hash": state.diff_hash, "diff": diff})


def _sent() -> CodeState | None:
    """The code state in :data:`CODE_ENV`, if set (and readable)."""
    text = os.environ.get(CODE_ENV)
    if not text:
        return None
    try:
        data = json.loads(text)
        diff = data.get("diff")
        return CodeState(
            commit=str(data["commit"]),
            branch=str(data["branch"]),
            dirty=bool(data["dirty"]),
            diff_hash=str(data["diff_hash"]) if data.get("diff_hash") else None,
            diff_object=(str(diff[0]), int(diff[1])) if diff else None,
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def code_state(start: Path | None = None) -> CodeState | None:
    """The git state of the repository holding ``start`` (default: cwd), or ``None``; in a
    trial sent to a cluster, the state of the code that was sent (:data:`CODE_ENV`)."""
    sent = _sent()
    if sent is not None:
        return sent
    given = start or Path.cwd()
    with _lock:
        if given in _code_states:
            return _code_states[given]
    folder = given.resolve()
    state = _capture_code(folder)
    with _lock:
        _code_states[folder] = _code_states[given] = state
    return state


def _process_start_time(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


def _program() -> str:
    """The command's name: ``molen`` also for ``python -m molen`` (whose ``argv[0]`` is the
    package's ``__main__.py``)."""
    if not sys.argv or not sys.argv[0]:
        return "python"
    path = Path(sys.argv[0])
    return path.parent.name if path.name == "__main__.py" else path.name


def environment() -> Environment:
    """The current process's command line, Python version, host and user."""
    global _environment
    if _environment is None:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
        _environment = Environment(
            command=" ".join([_program(), *sys.argv[1:]]),
            python=f"{platform.python_implementation()} {platform.python_version()}",
            host=socket.gethostname(),
            user=user,
            pid=os.getpid(),
            pid_started=_process_start_time(os.getpid()),
        )
    return _environment


def package_snapshot() -> bytes:
    """``name==version`` of every installed distribution, one a line, sorted by name.

    Read from the ``NAME-VERSION.dist-info`` (and ``.egg-info``) folder names on ``sys.path``,
    which installers write in a standard form: a directory listing, not the ~0.2 s that parsing
    every distribution's metadata takes.
    """
    global _packages
    if _packages is None:
        found: dict[str, str] = {}
        for entry in sys.path:
            try:
                names = os.listdir(entry or ".")
            except OSError:
                continue
            for folder in names:
                stem, dot, kind = folder.rpartition(".")
                if not dot or kind not in {"dist-info", "egg-info"} or "-" not in stem:
                    continue
                name, _, version = stem.partition("-")
                version = version.split("-py", 1)[0]  # egg-info: NAME-VERSION-pyX.Y
                found.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version)
        lines = sorted(f"{name}=={version}" for name, version in found.items())
        _packages = ("\n".join(lines) + "\n").encode()
    return _packages


def reset_after_fork() -> None:
    """Forget what was captured (a forked child has another pid)."""
    global _environment
    _environment = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reset_after_fork)

"""The project's environment as a lock file: ``requirements.in`` says what is needed,
``requirements.lock`` pins it and everything it pulls in (the pip-tools format, so ``pip install
-r requirements.lock``, ``pip-compile`` and ``uv pip compile`` all read and write it).

:func:`lock` pins the requirements to what is installed in this environment, following each
distribution's own dependencies (their markers evaluated here, extras included), so the lock is
the environment that works now. :func:`differences` compares a lock with what is installed:
``molen repro`` warns with it, and every run records the lock's hash (tag ``molen.env.lock``), so
``molen repro --verify`` can say that the environment moved since a run.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "LOCK_NAME",
    "Pin",
    "differences",
    "environment_differences",
    "lock",
    "lock_hash",
    "lock_text",
    "read_lock",
    "run_environment_changes",
    "snapshot_changes",
]

LOCK_NAME = "requirements.lock"
IN_NAME = "requirements.in"


class Pin(NamedTuple):
    """One locked package and who asked for it."""

    name: str
    version: str | None  # None: not installed here
    via: tuple[str, ...]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(lines: list[str]) -> list[str]:
    found = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text and not text.startswith("-"):
            found.append(text)
    return found


def lock(requirements: list[str]) -> list[Pin]:
    """Every distribution ``requirements`` need, pinned to the installed version, sorted."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pins: dict[str, Pin] = {}
    pending = [(Requirement(text), "requirements.in") for text in _requirements(requirements)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement, parent = pending.pop()
        name = _normal(requirement.name)
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            found = pins.get(name)
            pins[name] = Pin(name, None, tuple(sorted({*(found.via if found else ()), parent})))
            continue
        found = pins.get(name)
        pins[name] = Pin(name, dist.version, tuple(sorted({*(found.via if found else ()), parent})))
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            child = Requirement(text)
            environment = [{"extra": extra} for extra in requirement.extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environment):
                pending.append((child, name))
    return sorted(pins.values())


def lock_text(requirements: list[str], *, source: str = IN_NAME) -> str:
    """The lock file for ``requirements`` (what ``molen template lock`` writes)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    lines = [
        f"# Pinned from {source} by molen on {stamp}, to the packages installed then (pip-tools format).",
        "# Install with: pip install -r requirements.lock    Regenerate with: molen template lock",
    ]
    for pin in lock(requirements):
        lines.append(f"{pin.name}=={pin.version}" if pin.version else f"# {pin.name}: not installed here")
        lines.append("    # via " + ", ".join(pin.via))
    return "\n".join(lines) + "\n"


def read_lock(path: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a lock file."""
    pinned = {}
    for line in path.read_text().splitlines():
        found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#\\]+)", line)
        if found:
            pinned[_normal(found.group(1))] = found.group(2)
    return pinned


def differences(path: Path) -> list[str]:
    """How the installed packages differ from the lock at ``path`` (empty: they match)."""
    from importlib import metadata

    from molen.tracking.capture import package_snapshot

    listed = dict(line.split("==", 1) for line in package_snapshot().decode().splitlines() if "==" in line)
    found = []
    for name, version in sorted(read_lock(path).items()):
        if listed.get(_normal(name)) == version:
            continue  # the folder listing agrees: no need to parse its metadata (~1 ms each)
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            found.append(f"{name}: locked {version}, not installed")
            continue
        if installed != version:
            found.append(f"{name}: locked {version}, installed {installed}")
    return found


def lock_hash(root: Path) -> str | None:
    """``requirements.lock <hash>`` of the project's lock file, or None without one."""
    from molen.hashing import hash_bytes

    path = root / LOCK_NAME
    if not path.is_file():
        return None
    return f"{LOCK_NAME} {hash_bytes(path.read_bytes())[:16]}"


def snapshot_changes(recorded: bytes, current: bytes) -> list[str]:
    """How two package snapshots (``name==version`` lines, as runs record them) differ."""

    def parse(data: bytes) -> dict[str, str]:
        pairs = (line.split("==", 1) for line in data.decode().splitlines() if "==" in line)
        return {name: version for name, version in pairs}

    before, after = parse(recorded), parse(current)
    found = []
    for name in sorted(before.keys() | after.keys()):
        if name not in after:
            found.append(f"{name} {before[name]}: no longer installed")
        elif name not in before:
            found.append(f"{name} {after[name]}: installed since")
        elif before[name] != after[name]:
            found.append(f"{name}: {before[name]} then, {after[name]} now")
    return found


def run_environment_changes(record: Any, workspace: Any) -> list[str]:
    """How this environment differs from the one run ``record`` ran in: its lock file's hash
    and its installed packages (the run's ``molen/packages.txt``)."""
    from molen.tracking import capture

    found = []
    project = workspace.settings.project
    now = lock_hash(project.root) if project is not None else None
    then = record.tags.get("molen.env.lock")
    if then and now != then:
        found.append(f"the lock file changed: {then} then, {now or 'none'} now")
    packages = next((a for a in record.artifacts if a.path == "molen/packages.txt"), None)
    if packages is not None:
        found.extend(
            snapshot_changes(workspace.objects.get_bytes(packages.digest), capture.package_snapshot())
        )
    return found


def environment_differences(workspace: Any, run_id: str | None = None) -> list[str]:
    """The project's lock against what is installed, and with ``run_id`` the run's recorded
    environment against this one: one line per difference."""
    project = workspace.settings.project
    found = []
    if project is not None and (project.root / LOCK_NAME).is_file():
        found += [f"{LOCK_NAME}: {line}" for line in differences(project.root / LOCK_NAME)]
    if run_id is not None:
        from molen.tracking.reading import get_run

        record = get_run(run_id, workspace=workspace)
        found += [
            f"since run {record.id[:12]}: {line}" for line in run_environment_changes(record, workspace)
        ]
    return found

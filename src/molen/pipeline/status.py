"""Whether a stage is up to date: its command, deps and params now, against ``molen.lock``.

Dep and out versions come from the data layer (the state cache and folder listings answer for
unchanged files, so a pipeline with nothing to do costs a stat per file); param values from
the params files, parsed once per process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from molen.data.pointer import Pointer
from molen.data.tracked import DataSession
from molen.errors import InvalidValueError, UsageError
from molen.hashing import hash_bytes
from molen.pipeline.lock import StageRecord
from molen.pipeline.spec import PARAMS_FILE, ParamRef, Stage

__all__ = ["StageState", "param_name", "read_params", "run_cache_key", "stage_state"]


class StageState(NamedTuple):
    """A stage now: stale or not and why, and what it would record (outs as they are now)."""

    stage: Stage
    stale: bool
    reasons: list[str]
    current: StageRecord
    missing_deps: list[str]


def param_name(ref: ParamRef) -> str:
    """How a param is named in runs and the lock: ``train.lr``, or ``other.yaml:seed``."""
    return ref.key if ref.file == PARAMS_FILE else f"{ref.file}:{ref.key}"


_params_cache: dict[tuple[str, int, int], Any] = {}


def _params_document(root: Path, file: str, stage: str) -> Any:
    path = root / file
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InvalidValueError(f"molen.yaml: stage {stage}: params file {file} does not exist") from None
    key = (str(path), info.st_mtime_ns, info.st_size)
    if key not in _params_cache:
        import yaml

        try:
            _params_cache[key] = yaml.load(
                path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            )
        except yaml.YAMLError:
            raise InvalidValueError(f"{file} is not valid YAML; fix it (stage {stage} reads it)") from None
    return _params_cache[key]


def lookup(document: Any, key: str) -> tuple[bool, Any]:
    """(found, value) of the dotted ``key`` in ``document``."""
    node = document
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def read_params(root: Path, stage: Stage) -> dict[str, Any]:
    """The values of the params ``stage`` reads, by :func:`param_name`; an unknown key is refused
    with the stage, key and file named."""
    values: dict[str, Any] = {}
    for ref in stage.params:
        found, value = lookup(_params_document(root, ref.file, stage.name), ref.key)
        if not found:
            raise InvalidValueError(
                f"molen.yaml: stage {stage.name}: param {ref.key} is not in {ref.file}; add it there "
                "or fix the key"
            )
        values[param_name(ref)] = value
    return values


def run_cache_key(stage: Stage, deps: dict[str, Pointer], params: dict[str, Any]) -> str:
    """The identity of an execution: command, environment, folder, dep versions, params."""
    document = {
        "cmd": stage.cmd,
        "env": stage.env,
        "wdir": stage.wdir,
        "deps": {path: deps[path].hash for path in sorted(deps)},
        "params": params,
        "outs": sorted(stage.products),
    }
    return hash_bytes(json.dumps(document, sort_keys=True, default=str).encode())


def versions(session: DataSession, paths: tuple[str, ...]) -> dict[str, Pointer | None]:
    """The current version of each path (None where it does not exist)."""
    found: dict[str, Pointer | None] = {}
    for path in paths:
        try:
            found[path] = session.version(path)
        except UsageError:
            found[path] = None
    return found


def stage_state(
    session: DataSession, stage: Stage, locked: StageRecord | None, produced_upstream: set[str]
) -> StageState:
    """How ``stage`` stands against its ``locked`` record. ``produced_upstream``: deps another
    stage writes (a missing one is then a reason to run, not an error)."""
    root = session.project.root
    deps = versions(session, stage.deps)
    missing = [path for path, version in deps.items() if version is None]
    params = read_params(root, stage)
    outs = versions(session, stage.products)
    current = StageRecord(
        cmd=stage.cmd,
        deps={path: v for path, v in deps.items() if v is not None},
        params=params,
        outs={path: v for path, v in outs.items() if v is not None},
    )
    reasons: list[str] = []
    for path in missing:
        reasons.append(
            f"dep {path} is missing" + (" (an upstream stage makes it)" if path in produced_upstream else "")
        )
    if locked is None:
        reasons.append("never ran")
    else:
        if locked.cmd != stage.cmd:
            reasons.append("cmd changed")
        for path, version in current.deps.items():
            before = locked.deps.get(path)
            if before is None:
                reasons.append(f"dep {path} is new")
            elif before.hash != version.hash:
                reasons.append(f"dep {path} changed")
        for name, value in params.items():
            if name not in locked.params:
                reasons.append(f"param {name} is new")
            elif locked.params[name] != value:
                reasons.append(f"param {name} changed: {locked.params[name]!r} → {value!r}")
        for path in stage.products:
            before, now = locked.outs.get(path), outs.get(path)
            if now is None:
                reasons.append(f"out {path} is missing")
            elif before is None or before.hash != now.hash:
                reasons.append(f"out {path} was modified")
    return StageState(stage, bool(reasons), reasons, current, missing)

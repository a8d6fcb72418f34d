"""The pipeline declared under ``stages:`` in ``molen.yaml``: its stages and their graph.

Example::

    stages:
      prepare:
        cmd: python prepare.py
        deps: [data/raw.csv, prepare.py]
        params: [prepare.split]              # keys of params.yaml
        outs: [data/prepared]
      train:
        cmd: python train.py
        deps: [data/prepared, train.py]
        params: [train.max_depth, {other.yaml: [seed]}]
        outs: [model.pkl]
        metrics: [metrics.json]              # read into the run
        plots: [roc.png]                     # attached to the run
        env: {OMP_NUM_THREADS: "1"}
        wdir: .                              # where cmd runs; paths are relative to it

The graph comes from the files: a stage that depends on a path another stage writes runs
after it. Every problem is refused with the stage and field named.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from typing import Any, NamedTuple

from molen.errors import InvalidValueError
from molen.project import Project

__all__ = ["PARAMS_FILE", "ParamRef", "Pipeline", "Stage", "load_pipeline"]

PARAMS_FILE = "params.yaml"
_FIELDS = {"cmd", "deps", "params", "outs", "metrics", "plots", "wdir", "env"}


class ParamRef(NamedTuple):
    """A parameter a stage reads: a (dotted) key of a params file (relative to the project)."""

    file: str
    key: str


class Stage(NamedTuple):
    """One declared stage; every path is relative to the project root (POSIX)."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    params: tuple[ParamRef, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...]
    plots: tuple[str, ...]
    wdir: str
    env: dict[str, str]

    @property
    def products(self) -> tuple[str, ...]:
        """Every file the stage writes: outs, metrics and plots."""
        return self.outs + self.metrics + self.plots


class Pipeline:
    """The stages of a project and the order the files impose on them."""

    def __init__(self, stages: dict[str, Stage]) -> None:
        self.stages = stages
        self.producer: dict[str, str] = {}
        for stage in stages.values():
            for path in stage.products:
                _claim(self.producer, stages, stage, path)
        self.upstream: dict[str, set[str]] = {
            name: {self.producer[dep] for dep in _covering(self.producer, stage.deps)} - {name}
            for name, stage in stages.items()
        }
        self.downstream: dict[str, set[str]] = {name: set() for name in stages}
        for name, ups in self.upstream.items():
            for up in ups:
                self.downstream[up].add(name)
        self._check_cycles()

    def order(self, targets: Iterable[str] | None = None, *, downstream: bool = False) -> list[str]:
        """The stages to consider for ``targets`` (default: all), upstream first: the targets
        with everything they depend on, and with ``downstream`` everything depending on them."""
        names = list(targets) if targets else list(self.stages)
        for name in names:
            if name not in self.stages:
                known = ", ".join(self.stages) or "none"
                raise InvalidValueError(f"no stage named {name!r} in molen.yaml (stages: {known})")
        wanted: set[str] = set()
        grow = self.downstream if downstream else self.upstream
        todo = list(names)
        while todo:
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo.extend(grow[name])
        if downstream:  # what the downstream stages need runs first too
            todo = list(wanted)
            while todo:
                name = todo.pop()
                for up in self.upstream[name]:
                    if up not in wanted:
                        wanted.add(up)
                        todo.append(up)
        return [name for name in self._topological() if name in wanted]

    def _topological(self) -> list[str]:
        done: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            for up in sorted(self.upstream[name], key=list(self.stages).index):
                visit(up)
            done.append(name)

        for name in self.stages:
            visit(name)
        return done

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}
        path: list[str] = []

        def visit(name: str) -> None:
            state[name] = 1
            path.append(name)
            for up in sorted(self.upstream[name]):
                if state.get(up) == 1:
                    loop = [*path[path.index(up) :], up]
                    raise InvalidValueError(
                        f"molen.yaml: stages {' → '.join(reversed(loop))} form a cycle through their "
                        "deps and outs; a stage cannot depend on what it (indirectly) writes"
                    )
                if up not in state:
                    visit(up)
            path.pop()
            state[name] = 2

        for name in self.stages:
            if name not in state:
                visit(name)


def load_pipeline(project: Project, document: dict[str, Any]) -> Pipeline:
    """The pipeline declared in ``document`` (the parsed ``molen.yaml``) of ``project``."""
    raw = document.get("stages") or {}
    if not isinstance(raw, dict):
        raise InvalidValueError("molen.yaml: stages must be a mapping of stage names to stages")
    stages = {}
    for name, body in raw.items():
        stages[str(name)] = _stage(project, str(name), body)
    return Pipeline(stages)


def _stage(project: Project, name: str, body: Any) -> Stage:
    where = f"molen.yaml: stage {name}"
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise InvalidValueError(f"{where}: a stage name uses letters, digits, _ - . only")
    if isinstance(body, str):
        body = {"cmd": body}
    if not isinstance(body, dict):
        raise InvalidValueError(f"{where}: expected a mapping with at least cmd")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidValueError(
            f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(_FIELDS))})"
        )
    cmd = body.get("cmd")
    if isinstance(cmd, list) and cmd and all(isinstance(part, str) for part in cmd):
        cmd = " && ".join(cmd)
    if not isinstance(cmd, str) or not cmd.strip():
        raise InvalidValueError(f"{where}: cmd must be a command line (or a list of them)")
    wdir = body.get("wdir", ".")
    if not isinstance(wdir, str):
        raise InvalidValueError(f"{where}: wdir must be a folder path")
    base = _inside(project, ".", wdir, f"{where}: wdir")
    env = body.get("env") or {}
    if not isinstance(env, dict):
        raise InvalidValueError(f"{where}: env must be a mapping of variable names to values")
    paths = {
        field: tuple(_inside(project, base, p, f"{where}: {field}") for p in _strings(body, field, where))
        for field in ("deps", "outs", "metrics", "plots")
    }
    return Stage(
        name=name,
        cmd=cmd,
        deps=paths["deps"],
        params=_params(project, base, body.get("params"), where),
        outs=paths["outs"],
        metrics=paths["metrics"],
        plots=paths["plots"],
        wdir=base,
        env={str(k): str(v) for k, v in env.items()},
    )


def _strings(body: dict[str, Any], field: str, where: str) -> list[str]:
    value = body.get(field) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InvalidValueError(f"{where}: {field} must be a list of paths")
    return value


def _params(project: Project, base: str, value: Any, where: str) -> tuple[ParamRef, ...]:
    found: list[ParamRef] = []
    default = _inside(project, base, PARAMS_FILE, f"{where}: params")
    for item in [value] if isinstance(value, str) else value or []:
        if isinstance(item, str) and item:
            found.append(ParamRef(default, item))
        elif isinstance(item, dict):
            for file, keys in item.items():
                path = _inside(project, base, str(file), f"{where}: params")
                for key in [keys] if isinstance(keys, str) else keys or []:
                    if not isinstance(key, str) or not key:
                        raise InvalidValueError(f"{where}: params of {file} must be a list of keys")
                    found.append(ParamRef(path, key))
        else:
            raise InvalidValueError(
                f"{where}: params must list keys of {PARAMS_FILE}, or {{FILE: [keys]}} for another file"
            )
    return tuple(found)


def _inside(project: Project, base: str, path: str, where: str) -> str:
    """``path`` (relative to ``base``) as a normalised project-relative POSIX path."""
    if os.path.isabs(path):
        root = project.root.as_posix()
        if not (path == root or path.startswith(root + "/")):
            raise InvalidValueError(f"{where}: {path} is outside the project")
        path = os.path.relpath(path, root)
    joined = posixpath.normpath(posixpath.join(base, path.replace(os.sep, "/")))
    if joined == ".." or joined.startswith("../"):
        raise InvalidValueError(f"{where}: {path} is outside the project")
    first = joined.split("/", 1)[0]
    if first in {".git", ".molen"}:
        raise InvalidValueError(f"{where}: {path} is inside {first}/, which molen manages")
    return joined


def _claim(producer: dict[str, str], stages: dict[str, Stage], stage: Stage, path: str) -> None:
    """Record that ``stage`` writes ``path``; refuse a second writer or nested outs."""
    where = f"molen.yaml: stage {stage.name}"
    if path == ".":
        raise InvalidValueError(f"{where}: the project itself cannot be an out")
    owner = producer.get(path)
    if owner is not None:
        other = "this stage" if owner == stage.name else f"stage {owner}"
        raise InvalidValueError(f"{where}: {path} is written by {other} already; one stage writes each file")
    for existing, owner in producer.items():
        if path.startswith(existing + "/") or existing.startswith(path + "/"):
            inner, outer = (path, existing) if path.startswith(existing + "/") else (existing, path)
            outer_stage = owner if outer == existing else stage.name
            raise InvalidValueError(
                f"{where}: out {inner} is inside out {outer} (of stage {outer_stage}); outs cannot nest"
            )
    producer[path] = stage.name


def _covering(producer: dict[str, str], deps: tuple[str, ...]) -> list[str]:
    """The produced paths that ``deps`` are, or are inside, or contain."""
    found = []
    for dep in deps:
        for path in producer:
            if dep == path or dep.startswith(path + "/") or path.startswith(dep + "/"):
                found.append(path)
    return found

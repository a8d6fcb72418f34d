"""``molen exp``: run the pipeline with changed params, without editing the workspace.

Each experiment runs in its own working copy (``.molen/exps/ID``: the project's files, minus
``.git`` and ``.molen``), with the params overridden there, as a `molen repro` whose run is
recorded in the project's metadata store and whose outs land in the project's object store
(so a repeat is answered by the run cache). A sweep (``--grid``, ``--random``) is several
such experiments, side by side with ``jobs``, each a child of one parent run. ``apply`` brings
an experiment's params and outs back into the workspace.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from molen.data.tracked import DataSession
from molen.errors import InvalidValueError, NotFoundError, UsageError
from molen.pipeline.lock import LOCK_NAME, StageRecord
from molen.pipeline.repro import EXP_NAME_ENV, OVERRIDES_ENV, PARENT_ENV, Echo
from molen.pipeline.spec import PARAMS_FILE

__all__ = [
    "Experiment",
    "apply_experiment",
    "apply_params",
    "check_params",
    "grid",
    "parse_overrides",
    "run_experiments",
    "sample",
]

REPORT_ENV = "MOLEN_REPRO_REPORT"


class Experiment(NamedTuple):
    """One finished experiment: its overrides, its run (None if nothing ran), and whether
    every stage succeeded; ``output`` is what `molen repro` printed."""

    overrides: dict[str, Any]
    run_id: str | None
    ok: bool
    output: str


def parse_overrides(texts: list[str]) -> dict[str, Any]:
    """``["train.lr=0.1", "train.depth=8"]`` → ``{"train.lr": 0.1, "train.depth": 8}``; values
    are read as YAML scalars (numbers, booleans, strings). ``file.yaml:key=v`` targets another
    params file."""
    import yaml

    found: dict[str, Any] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-S {text!r}: write KEY=VALUE, e.g. -S train.lr=0.1")
        found[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return found


def grid(axes: list[str]) -> list[dict[str, Any]]:
    """Every combination of ``["train.lr=0.1,0.01", "train.depth=4,8"]`` (4 here)."""
    choices = []
    for axis in axes:
        key, sep, values = axis.partition("=")
        if not sep or not values:
            raise UsageError(f"--grid {axis!r}: write KEY=V1,V2,…, e.g. --grid train.lr=0.1,0.01")
        choices.append([(key.strip(), _scalar(value)) for value in values.split(",")])
    return [dict(combination) for combination in itertools.product(*choices)]


def sample(axes: list[str], count: int, seed: int | None = None) -> list[dict[str, Any]]:
    """``count`` distinct combinations drawn at random from the grid of ``axes``."""
    combinations = grid(axes)
    if count < 1:
        raise UsageError("--random needs a count of at least 1")
    return random.Random(seed).sample(combinations, min(count, len(combinations)))


def _scalar(text: str) -> Any:
    import yaml

    return yaml.safe_load(text) if text.strip() else ""


def run_experiments(
    session: DataSession,
    variants: list[dict[str, Any]],
    *,
    targets: list[str] | None = None,
    jobs: int = 1,
    name: str | None = None,
    echo: Echo | None = None,
    ray_address: str | None = None,
    executor: str = "local",
    on_trial: Callable[[int, Experiment], None] | None = None,
) -> tuple[str | None, list[Experiment]]:
    """Run one experiment per entry of ``variants`` (param overrides); with several, under a
    parent run. Returns the parent run's id (None for one experiment) and the experiments.

    ``executor="ray"`` sends each experiment to the Ray cluster at ``ray_address`` as a task
    (:mod:`molen.compute.cluster`); ``on_trial(index, experiment)`` is told as each finishes."""
    if not variants:
        raise UsageError("nothing to run: give -S KEY=VALUE, --grid or --random")
    if executor == "ray":
        return _run_on_ray(session, variants, targets or [], name, ray_address, on_trial)
    if executor != "local":
        raise UsageError(f"--executor {executor!r}: use local or ray")
    parent = None
    if len(variants) > 1:
        from molen.tracking.runs import start_run

        parent = start_run(name=name or "sweep", workspace=session.workspace)
        parent.set_tag("molen.exp.sweep", str(len(variants)))

    def one(index_and_overrides: tuple[int, dict[str, Any]]) -> Experiment:
        index, overrides = index_and_overrides
        label = name if len(variants) == 1 and name else f"{name or 'exp'}-{index + 1}"
        if len(variants) == 1:  # in this process: no second interpreter to start
            return _run_here(session, overrides, targets or [], label, echo)
        parent_id = parent.id if parent else None
        return _run_one(session, overrides, targets or [], parent_id, label)

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(one, enumerate(variants)))
    except BaseException:
        if parent is not None:
            parent.end("FAILED")
        raise
    if parent is not None:
        parent.end("FINISHED" if all(r.ok for r in results) else "FAILED")
    return (parent.id if parent else None), results


def _run_on_ray(
    session: DataSession,
    variants: list[dict[str, Any]],
    targets: list[str],
    name: str | None,
    ray_address: str | None,
    on_trial: Callable[[int, Experiment], None] | None,
) -> tuple[str | None, list[Experiment]]:
    from molen.compute import cluster
    from molen.config import project_config

    shared = cluster.require_shared_stores(session.workspace)  # before anything is started
    resources = cluster.resources_of(project_config(session.project))
    from molen.tracking.capture import code_state

    # the git state the trials record, read while this process imports Ray and joins the cluster
    background = ThreadPoolExecutor(1)
    git_state = background.submit(code_state, session.project.root)
    background.shutdown(wait=False)
    ray = cluster.connect(ray_address)
    try:
        sweep = cluster.Sweep(ray, resources)
        sweep.warm_up(len(variants))  # workers start while the project is packed
        check_params(session.project.root, variants)  # (a refused override leaves them idle)
        archive = cluster.pack_project(session.project.root, session)
        labels = [
            name if len(variants) == 1 and name else f"{name or 'exp'}-{i + 1}" for i in range(len(variants))
        ]
        git_state.result()
        from molen.tracking.runs import code_env

        code = code_env(session.workspace)  # the trials' copies have no .git
        trials = [
            (overrides, {**shared, **code, OVERRIDES_ENV: _overrides_text(overrides), EXP_NAME_ENV: label})
            for overrides, label in zip(variants, labels, strict=True)
        ]
        parent = None
        if len(variants) > 1:
            from molen.tracking.runs import start_run  # (SQLAlchemy: imported once workers start)

            parent = start_run(name=name or "sweep", workspace=session.workspace)
            parent.set_tag("molen.exp.sweep", str(len(variants)))
            parent.set_tag("molen.exp.executor", "ray")
            for _, env in trials:
                env[PARENT_ENV] = parent.id

        def done(index: int, result: dict[str, Any]) -> None:
            if on_trial is not None:
                on_trial(index, Experiment(variants[index], result["run_id"], result["ok"], result["output"]))

        try:
            results = sweep.run(archive, trials, targets, on_done=done)
        except KeyboardInterrupt:
            if parent is not None:
                _end_running_children(session, parent.id)
                parent.end("KILLED")
            raise
        except BaseException:
            if parent is not None:
                parent.end("FAILED")
            raise
        experiments = [
            Experiment(overrides, r["run_id"], r["ok"], r["output"])
            for overrides, r in zip(variants, results, strict=True)
        ]
        if parent is not None:
            # every trial is over: a run still RUNNING is an attempt whose worker (or node) was
            # lost before it could end it; Ray ran the trial again, under another run
            _end_running_children(session, parent.id)
            parent.end("FINISHED" if all(e.ok for e in experiments) else "FAILED")
        return (parent.id if parent else None), experiments
    finally:
        cluster.leave(ray)


def _end_running_children(session: DataSession, parent_id: str) -> None:
    """End KILLED the runs of a sweep that are still RUNNING once its tasks are over or
    cancelled: a task's processes can be gone before they end their runs themselves (Ray kills
    a dead worker's processes outright; a lost node takes them along)."""
    import time

    from molen.query import parse_filter

    store = session.workspace.metadata
    now = int(time.time() * 1000)
    for child in store.search_runs(where=parse_filter(f"parent_id = '{parent_id}' and status = 'RUNNING'")):
        store.end_run(child.id, "KILLED", now, only_if_running=True)


def _run_here(
    session: DataSession, overrides: dict[str, Any], targets: list[str], label: str, echo: Echo | None
) -> Experiment:
    """One experiment in a working copy, run by this process (the stage commands are still
    separate processes, and see the project's stores in their environment)."""
    from molen.config import project_config
    from molen.pipeline.repro import RunOptions, repro
    from molen.pipeline.spec import load_pipeline
    from molen.workspace import open_workspace

    with _working_copy(session, overrides) as copy:
        settings = session.workspace.settings
        stores = {"tracking.uri": settings["tracking.uri"], "objects.url": settings["objects.url"]}
        here = DataSession(open_workspace(copy, flags=stores))
        pipeline = load_pipeline(here.project, project_config(here.project))
        options = RunOptions(label, None, _overrides_text(overrides))
        result = repro(here, pipeline, targets or None, echo=echo or (lambda outcome: None), options=options)
        here.close()
        return Experiment(overrides, result.run_id, not result.failed, "")


@contextlib.contextmanager
def _working_copy(session: DataSession, overrides: dict[str, Any]) -> Iterator[Path]:
    """A copy of the project's files with ``overrides`` in its params files, deleted after."""
    copy = session.project.state_dir / "exps" / uuid.uuid4().hex[:12]
    try:
        _copy_workspace(session.project.root, copy)
        apply_params(copy, overrides)
        yield copy
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _overrides_text(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in overrides.items())


def _run_one(
    session: DataSession,
    overrides: dict[str, Any],
    targets: list[str],
    parent: str | None,
    label: str,
) -> Experiment:
    with _working_copy(session, overrides) as copy:
        settings = session.workspace.settings
        env = {
            **os.environ,
            "MOLEN_TRACKING_URI": str(settings["tracking.uri"]),
            "MOLEN_OBJECTS_URL": str(settings["objects.url"]),
            OVERRIDES_ENV: _overrides_text(overrides),
            EXP_NAME_ENV: label,
        }
        if parent:
            env[PARENT_ENV] = parent
        run_id, ok, output = repro_process(copy, targets, env)
        return Experiment(overrides, run_id, ok, output)


def repro_process(
    folder: Path, targets: list[str], env: dict[str, str], **popen: Any
) -> tuple[str | None, bool, str]:
    """`molen repro TARGETS` in ``folder`` as a process with ``env``: the run it recorded,
    whether every stage succeeded, what it printed. Interrupted (Ctrl-C, a cancelled task), it
    terminates the process, whose exit handler ends the run KILLED."""
    report = folder / ".molen-report.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "molen", "repro", *targets],
        cwd=folder,
        env={**env, REPORT_ENV: str(report)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )
    try:
        output, _ = process.communicate()
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    outcome = json.loads(report.read_text()) if report.exists() else {}
    return outcome.get("run_id"), process.returncode == 0, output or ""


def _copy_workspace(root: Path, copy: Path) -> None:
    """The project's files, without .git and .molen, in a fresh folder."""

    def skip(folder: str, names: list[str]) -> set[str]:
        return {".git", ".molen"} & set(names) if Path(folder) == root else set()

    shutil.copytree(root, copy, ignore=skip, symlinks=True)


def check_params(root: Path, variants: list[dict[str, Any]]) -> None:
    """Refuse, before anything runs, overrides that :func:`apply_params` would refuse: each
    variant is applied to a scratch copy of the params files it changes."""
    import tempfile

    files = {_params_file_of(name) for overrides in variants for name in overrides}
    with tempfile.TemporaryDirectory(prefix="molen-params-") as scratch:
        for overrides in variants:
            for file in files:
                source, copy = root / file, Path(scratch) / file
                copy.parent.mkdir(parents=True, exist_ok=True)
                if source.exists():
                    shutil.copyfile(source, copy)
            apply_params(Path(scratch), overrides)


def _params_file_of(name: str) -> str:
    file, sep, _ = name.partition(":")
    return file if sep else PARAMS_FILE


def apply_params(root: Path, overrides: dict[str, Any]) -> None:
    """Write ``overrides`` into the params files under ``root`` (keys must exist already)."""
    by_file: dict[str, dict[str, Any]] = {}
    for name, value in overrides.items():
        file, sep, key = name.partition(":")
        if not sep:
            file, key = PARAMS_FILE, name
        by_file.setdefault(file, {})[key] = value
    for file, values in by_file.items():
        _update_params_file(root / file, values)


def _update_params_file(path: Path, values: dict[str, Any]) -> None:
    """Set dotted ``values`` in the YAML file ``path``, keeping its comments and layout."""
    from ruamel.yaml import YAML

    from molen.atomic import write_atomic

    yaml = YAML()
    try:
        document = yaml.load(path.read_text()) or {}
    except FileNotFoundError:
        raise NotFoundError(
            f"params file {path.name} does not exist; create it with the keys to change"
        ) from None
    for key, value in values.items():
        node = document
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise _unknown(key, path)
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise _unknown(key, path)
        node[parts[-1]] = value
    import io

    buffer = io.StringIO()
    yaml.dump(document, buffer)
    write_atomic(path, buffer.getvalue().encode())


def _unknown(key: str, path: Path) -> InvalidValueError:
    return InvalidValueError(f"param {key} is not in {path.name}; experiments change existing params")


def apply_experiment(session: DataSession, run_id: str) -> list[str]:
    """Bring run ``run_id``'s params and outs into the workspace and its lock into molen.lock;
    returns the params set."""
    from molen.pipeline.lock import read_lock, write_lock
    from molen.tracking.reading import get_run

    record = get_run(run_id, workspace=session.workspace)
    lock_artifact = next((a for a in record.artifacts if a.path == LOCK_NAME), None)
    if lock_artifact is None:
        raise NotFoundError(
            f"run {record.id[:12]} has no {LOCK_NAME}: it is not a pipeline run (molen repro / exp)"
        )
    root = session.project.root
    staged = session.project.state_dir / f"apply-{record.id[:12]}"
    staged.mkdir(parents=True, exist_ok=True)
    try:
        (staged / LOCK_NAME).write_bytes(session.cache.get_bytes(lock_artifact.digest))
        records: dict[str, StageRecord] = read_lock(staged)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    params = {name: value for stage in records.values() for name, value in stage.params.items()}
    apply_params(root, params)
    for stage in records.values():
        for path, pointer in stage.outs.items():
            session.materialize(path, pointer)
    write_lock(root, records)
    return sorted(params)

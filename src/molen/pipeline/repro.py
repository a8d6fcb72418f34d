"""``molen repro``: run the stages whose command, deps or params changed, in dependency order.

Independent stages run side by side (``jobs``). A stage that fails stops the stages after it;
stages that finished keep their lock entry. A stage's outs enter the cache only after it
succeeded, so a failure never leaves half-written outs there. Before running a stage, the run
cache is asked whether the same command already ran on the same dep versions and params (here
or, after `molen data pull`, on a teammate's machine): then its outs are restored instead.

Every execution is recorded as one tracked run (started when the first stage runs): params,
metrics files, plots, the versions of deps and outs, the commit and the lock's hash. Stage
commands see ``MOLEN_RUN_ID``, so ``molen.start_run()`` inside them attaches to that run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, NamedTuple

from molen.data.lock import data_lock
from molen.data.pointer import Pointer
from molen.data.tracked import DataSession, TrackedPath
from molen.errors import ConflictError, MolenError, NotFoundError
from molen.pipeline.lock import StageRecord, read_lock, write_lock
from molen.pipeline.spec import Pipeline, Stage
from molen.pipeline.status import StageState, run_cache_key, stage_state
from molen.stores.objects.base import ObjectStore

__all__ = [
    "RUN_CACHE",
    "RUN_ID_ENV",
    "ReproResult",
    "RunOptions",
    "StageOutcome",
    "repro",
    "run_cache_outs",
]

RUN_ID_ENV = "MOLEN_RUN_ID"
PARENT_ENV = "MOLEN_PARENT_RUN_ID"  # an experiment of a sweep: its parent run
OVERRIDES_ENV = "MOLEN_EXP_OVERRIDES"  # an experiment: the params it changed, as text
EXP_NAME_ENV = "MOLEN_EXP_NAME"
RUN_CACHE = "runcache"


class StageOutcome(NamedTuple):
    """What happened to one stage: ``action`` is up-to-date, ran, restored, failed, skipped
    (an upstream stage failed) or would-run (``dry``)."""

    name: str
    action: str
    reasons: list[str]
    seconds: float = 0.0
    error: str = ""


class RunOptions(NamedTuple):
    """How the run that records a repro is named and placed: its name, its parent (an
    experiment of a sweep), the params an experiment overrode (shown by `molen exp show`)."""

    name: str = "repro"
    parent_id: str | None = None
    overrides: str = ""


class ReproResult(NamedTuple):
    """Every stage considered, upstream first, and the run that recorded the execution."""

    outcomes: list[StageOutcome]
    run_id: str | None

    @property
    def failed(self) -> list[StageOutcome]:
        return [o for o in self.outcomes if o.action == "failed"]


Echo = Callable[[StageOutcome], None]


class _Execution:
    """One `molen repro`: the lock as it is being rewritten, the run, the stages' results."""

    def __init__(
        self,
        session: DataSession,
        pipeline: Pipeline,
        *,
        force: bool,
        dry: bool,
        echo: Echo,
        options: RunOptions = RunOptions(),
        remote: Any = None,
    ) -> None:
        self.options = options
        self.remote = remote  # molen.compute.cluster.RayStages: stages run on a Ray cluster
        self.session = session
        self.pipeline = pipeline
        self.force = force
        self.dry = dry
        self.echo = echo
        self.root = session.project.root
        self.lock = read_lock(self.root)
        self.outcomes: dict[str, StageOutcome] = {}
        self.run: Any = None
        self._guard = threading.Lock()

    # -- the run --------------------------------------------------------------------------------

    def _active_run(self) -> Any:
        with self._guard:
            if self.run is None:
                from molen.tracking.runs import start_run

                self.run = start_run(
                    name=self.options.name,
                    workspace=self.session.workspace,
                    parent_id=self.options.parent_id,
                )
                self.run.set_tag("molen.pipeline", "repro")
                if self.options.overrides:  # an experiment: the params it changed
                    self.run.set_tag("molen.exp.overrides", self.options.overrides)
            return self.run

    def finish_run(self) -> str | None:
        if self.run is None:
            return None
        from molen.hashing import hash_bytes

        lock_path = self.root / "molen.lock"
        lock_bytes = lock_path.read_bytes() if lock_path.exists() else b""
        self.run.set_tag("molen.lock_hash", hash_bytes(lock_bytes))
        if lock_bytes:  # what `molen exp apply` and `repro --verify` start from
            self.run.log_artifact(lock_path, "molen.lock")
        ran = sorted(name for name, o in self.outcomes.items() if o.action in {"ran", "restored"})
        self.run.set_tag("molen.stages", ",".join(ran))
        self.run.end("FAILED" if any(o.action == "failed" for o in self.outcomes.values()) else "FINISHED")
        return str(self.run.id)

    # -- one stage ------------------------------------------------------------------------------

    def stage(self, name: str) -> StageOutcome:
        stage = self.pipeline.stages[name]
        produced = {path for path in stage.deps if path in self.pipeline.producer}
        state = stage_state(self.session, stage, self.lock.get(name), produced)
        upstream_ran = [
            up
            for up in self.pipeline.upstream[name]
            if self.outcomes[up].action in {"ran", "restored", "would-run"}
        ]
        reasons = state.reasons or (["forced"] if self.force else [])
        if self.dry and upstream_ran and not state.stale:
            reasons = [f"upstream stage {up} would run" for up in sorted(upstream_ran)]
        if not reasons:
            return StageOutcome(name, "up-to-date", [])
        if self.dry:
            return StageOutcome(name, "would-run", reasons)
        absent = [path for path in state.missing_deps]
        if absent:
            raise NotFoundError(
                f"stage {name}: dep {absent[0]} does not exist and no stage writes it; create it, "
                "`molen data pull` it, or fix deps in molen.yaml"
            )
        started = time.perf_counter()
        key = run_cache_key(stage, state.current.deps, state.current.params)
        if not self.force and self._restore(stage, key):
            outcome = StageOutcome(name, "restored", reasons, time.perf_counter() - started)
        else:
            if self.remote is not None:
                self._execute_remote(stage, state)
            else:
                self._execute(stage)
            outcome = StageOutcome(name, "ran", reasons, time.perf_counter() - started)
        record = self._record(stage, state, key)
        self._log(stage, record)
        return outcome

    def _execute(self, stage: Stage) -> None:
        run = self._active_run()
        settings = self.session.workspace.settings
        env = {
            **os.environ,
            # `python` in a stage is the interpreter molen runs on (its venv), activated or not
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
            **stage.env,
            RUN_ID_ENV: run.id,
            "MOLEN_STAGE": stage.name,
            # the stores this repro records into, also when they came from flags
            "MOLEN_TRACKING_URI": str(settings["tracking.uri"]),
            "MOLEN_OBJECTS_URL": str(settings["objects.url"]),
        }
        for path in stage.products:
            self._remove_cached_product(path)
        try:
            done = subprocess.run(stage.cmd, shell=True, cwd=self.root / stage.wdir, env=env)
        except OSError as exc:
            raise _StageFailed(f"stage {stage.name}: cannot run {stage.cmd!r}: {exc.strerror}") from None
        if done.returncode != 0:
            raise _StageFailed(f"stage {stage.name} failed: `{stage.cmd}` exited with {done.returncode}")
        absent = [path for path in stage.products if not os.path.lexists(self.root / path)]
        if absent:
            raise _StageFailed(f"stage {stage.name} did not create {absent[0]}, which molen.yaml lists")

    def _execute_remote(self, stage: Stage, state: StageState) -> None:
        """Run ``stage`` on the cluster, then put its products in this workspace (from the
        shared object store), as if it had run here."""
        run = self._active_run()
        env = {**stage.env, RUN_ID_ENV: run.id, "MOLEN_STAGE": stage.name}
        try:
            outs = self.remote.run(stage, state.current.deps, env)
        except MolenError as exc:
            raise _StageFailed(exc.message) from None
        self.session.cache.refresh()  # the worker may have written new packs of small files
        for path, pointer in outs.items():
            self.session.materialize(path, pointer, ignore=path in stage.outs)

    def _remove_cached_product(self, path: str) -> None:
        """Delete an out before its stage reruns, when the cache can give it back (a file
        nobody stored is left alone: the stage overwrites it)."""
        import shutil

        target = self.root / path
        try:
            version = self.session.version(path)
        except MolenError:
            return
        if version is None or not self.session.cache.exists(version.hash):
            return
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)

    def _restore(self, stage: Stage, key: str) -> bool:
        """Put the outs the run cache remembers for ``key`` in place; False on a miss."""
        cache = self.session.cache
        try:
            entry = json.loads(cache.get_named(f"{RUN_CACHE}/{key}"))
        except (NotFoundError, ValueError):
            return False
        outs = {path: Pointer(**value) for path, value in entry.get("outs", {}).items()}
        if set(outs) != set(stage.products) or not all(cache.exists(p.hash) for p in outs.values()):
            return False
        for path, pointer in outs.items():
            self.session.materialize(path, pointer, ignore=path in stage.outs)  # as a run would
        return True

    def _record(self, stage: Stage, state: StageState, key: str) -> StageRecord:
        """Store the outs, remember the execution in the run cache, update molen.lock."""
        with data_lock(self.session.project.state_dir, timeout=self.session.lock_timeout):
            outs = {path: self.session.snapshot(self.root / path) for path in stage.products}
        for path in stage.outs:
            self.session.ignore_in_git(path)
        entry = {"outs": {path: p._asdict() for path, p in sorted(outs.items())}}
        self.session.cache.put_named(f"{RUN_CACHE}/{key}", json.dumps(entry, sort_keys=True).encode())
        run_id = self.run.id if self.run is not None else None
        record = StageRecord(stage.cmd, state.current.deps, state.current.params, outs, run_id)
        with self._guard:
            self.lock[stage.name] = record
            write_lock(self.root, self.lock)
        return record

    def _log(self, stage: Stage, record: StageRecord) -> None:
        run = self._active_run()
        run.log_params({key: _param_text(value) for key, value in record.params.items()})
        for path in stage.metrics:
            run.log_metrics(_metrics_of(self.root / path, stage.name))
        for path in stage.plots:
            run.log_artifact(self.root / path, path)
        for path, pointer in record.deps.items():
            run.record_data(path, pointer, role="input")
        for path, pointer in record.outs.items():
            run.record_data(path, pointer, role="output")


class _StageFailed(MolenError):
    exit_code = 1


def repro(
    session: DataSession,
    pipeline: Pipeline,
    targets: list[str] | None = None,
    *,
    force: bool = False,
    dry: bool = False,
    downstream: bool = False,
    jobs: int = 1,
    echo: Echo = lambda outcome: None,
    options: RunOptions = RunOptions(),
    remote: Any = None,
) -> ReproResult:
    """Bring the ``targets`` (default: every stage) up to date; see the module docstring.

    Returns what happened to each stage; a failed stage is reported there, not raised, so the
    caller can show everything that ran. Example: ``repro(session, pipeline, ["train"], jobs=2)``.
    """
    from molen.tracking.runs import install_exit_handlers

    install_exit_handlers()  # from this thread: the run starts in a stage's thread, SIGTERM must end it
    order = pipeline.order(targets, downstream=downstream)
    execution = _Execution(session, pipeline, force=force, dry=dry, echo=echo, options=options, remote=remote)
    pending = list(order)
    running: dict[Future[StageOutcome], str] = {}

    def ready(name: str) -> bool:
        return all(up in execution.outcomes for up in pipeline.upstream[name] if up in order)

    def settle(name: str, outcome: StageOutcome) -> None:
        execution.outcomes[name] = outcome
        echo(outcome)

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            while pending or running:
                for name in [n for n in pending if ready(n)]:
                    pending.remove(name)
                    blocked = [
                        up
                        for up in pipeline.upstream[name]
                        if execution.outcomes.get(up, StageOutcome("", "", [])).action
                        in {"failed", "skipped"}
                    ]
                    if blocked:
                        settle(name, StageOutcome(name, "skipped", [f"upstream stage {blocked[0]} failed"]))
                        continue
                    if len(running) >= max(1, jobs):
                        pending.insert(0, name)
                        break
                    running[pool.submit(execution.stage, name)] = name
                if not running:
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    try:
                        settle(name, future.result())
                    except (_StageFailed, ConflictError, NotFoundError) as exc:
                        settle(name, StageOutcome(name, "failed", [], error=str(exc)))
    finally:
        run_id = execution.finish_run()
    return ReproResult([execution.outcomes[name] for name in order if name in execution.outcomes], run_id)


_CHANGED = {"ran", "restored", "would-run"}


def _action(execution: _Execution, name: str) -> str:
    outcome = execution.outcomes.get(name)
    return outcome.action if outcome is not None else ""


def run_cache_outs(store: ObjectStore) -> list[TrackedPath]:
    """Every out version the run cache entries in ``store`` name (what sharing them needs)."""
    found = []
    for name in store.names(RUN_CACHE):
        try:
            entry = json.loads(store.get_named(name))
            found += [TrackedPath(path, Pointer(**value)) for path, value in entry.get("outs", {}).items()]
        except (NotFoundError, ValueError, TypeError):
            continue  # a damaged entry is a miss, not an error
    return found


def _param_text(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else json.dumps(value)


def _metrics_of(path: Any, stage: str) -> dict[str, float]:
    """The numbers in a JSON or YAML metrics file, nested keys joined with dots."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise _StageFailed(f"stage {stage} did not write its metrics file {path.name}") from None
    try:
        document = json.loads(text)
    except ValueError:
        import yaml

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError:
            raise _StageFailed(f"stage {stage}: metrics file {path.name} is neither JSON nor YAML") from None
    found: dict[str, float] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            found[prefix[:-1]] = float(node)

    walk(document, "")
    return found

"""Sweeps on a Ray cluster: each trial of ``molen exp run --grid … --executor ray`` is a Ray task.

A trial on Ray is the same `molen repro` as a local one, run by a worker in a copy of the
project: the driver packs the working copy (the project's files with the trial's params, minus
``.git``, ``.molen`` and the tracked data), and the worker unpacks it, checks the tracked data
out of the shared object store, runs `molen repro` and answers what it recorded. So the run,
its lineage, the run cache and the outs land in the same stores as a local run's: a result
computed on Ray is indistinguishable from one computed here.

That needs stores every worker sees: a PostgreSQL database (or a molen server) for the runs, and
an ``s3://`` bucket (or a folder every worker mounts, written ``file:///…``) for the objects.
:func:`require_shared_stores` refuses anything else and says what to set.

Failures: a worker lost mid-trial is retried by Ray (``max_retries``); a trial whose pipeline
fails is recorded FAILED by its own `molen repro` and the sweep goes on; Ctrl-C cancels the
trials not finished (Ray interrupts each; a trial then terminates its `molen repro`) and ends
the sweep's run and its unfinished trials' runs KILLED.

Credentials (database password, AWS keys) are never sent with the tasks: workers take them from
their own environment, as on any cluster (Kubernetes secrets on KubeRay).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from molen.compute.zygote import die_with_parent
from molen.errors import UsageError

if TYPE_CHECKING:
    from molen.data.tracked import DataSession
    from molen.workspace import Workspace

__all__ = [
    "RayStages",
    "Sweep",
    "cancel",
    "completed",
    "connect",
    "leave",
    "pack_project",
    "pack_tree",
    "require_shared_stores",
    "resources_of",
    "run_stage",
    "trial",
]

#: Ray retries a trial whose worker died this many times (a failed pipeline is not retried).
MAX_RETRIES = 3


def require_shared_stores(workspace: Workspace) -> dict[str, str]:
    """The settings workers need (the stores' URLs), or a :class:`UsageError` naming what to
    configure when a store lives only on this machine."""
    settings = workspace.settings
    tracking = str(settings["tracking.uri"] or "")
    objects = str(settings["objects.url"] or "")
    if not tracking.startswith(("postgresql", "http://", "https://")):
        raise UsageError(
            f"--executor ray: runs are recorded in {tracking or 'a local store'}, which the cluster's "
            "workers cannot reach; set tracking.uri to a shared database "
            "(MOLEN_TRACKING_URI=postgresql+psycopg://user@host/db) or a molen server (http://host:5000)"
        )
    if "://" not in objects:
        raise UsageError(
            f"--executor ray: objects.url is the folder {objects} on this machine, which the cluster's "
            "workers cannot read; set objects.url to a bucket (MOLEN_OBJECTS_URL=s3://bucket/prefix), "
            "or, if every worker mounts that folder at the same path, write it as file://" + objects
        )
    shared = {"MOLEN_TRACKING_URI": tracking, "MOLEN_OBJECTS_URL": objects}
    endpoint = settings["objects.s3_endpoint_url"]
    if endpoint:
        shared["MOLEN_OBJECTS_S3_ENDPOINT_URL"] = str(endpoint)
    return shared


def resources_of(config: dict[str, Any], *where: str) -> dict[str, Any]:
    """What a task asks of the cluster, from ``molen.yaml``'s ``ray.trial`` (a sweep's trial)
    or ``ray.stages.NAME`` (a stage): ``cpus`` (default 1), ``gpus``, ``memory`` such as
    ``2GB``; as Ray's ``num_cpus``, ``num_gpus`` and ``memory``."""
    where = where or ("trial",)
    section: Any = config.get("ray") or {}
    for key in where:
        section = section.get(key) if isinstance(section, dict) else None
    section = section or {}
    name = ".".join(("ray", *where))
    if not isinstance(section, dict):
        raise UsageError(f"molen.yaml: {name} must be a mapping (cpus, gpus, memory)")
    unknown = set(section) - {"cpus", "gpus", "memory"}
    if unknown:
        raise UsageError(f"molen.yaml: {name} has no setting {sorted(unknown)[0]!r}; use cpus, gpus, memory")
    found: dict[str, Any] = {"num_cpus": 1}
    try:
        if "cpus" in section:
            found["num_cpus"] = float(section["cpus"])
        if "gpus" in section:
            found["num_gpus"] = float(section["gpus"])
        if "memory" in section:
            found["memory"] = _bytes(str(section["memory"]))
    except ValueError:
        raise UsageError(
            f"molen.yaml: {name} wants numbers: cpus: 1, gpus: 0, memory: 2GB (KB, MB, GB or bytes)"
        ) from None
    if found["num_cpus"] < 0 or found.get("num_gpus", 0) < 0:
        raise UsageError(f"molen.yaml: {name} cpus and gpus cannot be negative")
    return found


def _bytes(text: str) -> int:
    units = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
    cleaned = text.strip().upper().replace("IB", "B")
    for unit, size in units.items():
        if cleaned.endswith(unit):
            return int(float(cleaned[: -len(unit)]) * size)
    return int(float(cleaned))


def connect(address: str | None) -> Any:
    """Join the Ray cluster at ``address`` (default: ``RAY_ADDRESS``); the ``ray`` module."""
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'molen[ray]'") from None
    chosen = address or os.environ.get("RAY_ADDRESS")
    if not chosen:
        raise UsageError(
            "--executor ray: which cluster? give --ray-address HOST:PORT (or set RAY_ADDRESS), "
            "e.g. the head node's address from `ray start --head`"
        )
    if not ray.is_initialized():
        try:
            ray.init(address=chosen, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"--executor ray: cannot join the Ray cluster at {chosen}: {exc}") from None
        _joined.add(id(ray))
    return ray


_joined: set[int] = set()


def leave(ray: Any) -> None:
    """Leave the cluster if :func:`connect` joined it (a caller's own Ray session is left
    alone): done here, it takes ~0.3 s; left to Ray's exit handler, ~0.9 s more."""
    if id(ray) in _joined:
        _joined.discard(id(ray))
        ray.shutdown()


def pack_project(root: Path, session: DataSession) -> bytes:
    """The project's files under ``root`` as a gzipped tar, without the tracked data (workers
    check it out of the shared object store; its pointer files travel)."""
    return pack_tree(root, session)


def pack_tree(root: Path, session: DataSession, *, exclude: set[str] | frozenset[str] = frozenset()) -> bytes:
    """``root``'s files as a gzipped tar under ``project/``, without ``.git``, ``.molen``, the
    tracked data and the paths in ``exclude``."""
    skipped = {t.path for t in session.tracked()} | set(exclude)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:

        def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            relative = info.name.split("/", 1)[1] if "/" in info.name else ""
            if relative.split("/", 1)[0] in {".git", ".molen"}:
                return None
            if relative in skipped or any(relative.startswith(path + "/") for path in skipped):
                return None
            return info

        archive.add(root, arcname="project", filter=keep)
    return buffer.getvalue()


#: a stage's process gets SIGTERM when its worker dies (Linux), so a retry never races it
_CHILD: dict[str, Any] = {"preexec_fn": die_with_parent} if sys.platform.startswith("linux") else {}


def trial(
    archive: bytes | None, overrides: dict[str, Any], targets: list[str], env: dict[str, str]
) -> dict[str, Any]:
    """What a worker does for one trial (the body of the Ray task): unpack the project, set
    the trial's params, then `molen data checkout` and `molen repro` in a process forked by the
    worker's zygote (see :mod:`molen.compute.zygote`); the run id it recorded, whether it
    succeeded, and its output.

    Without an ``archive``, a warm-up: the worker starts its zygote and waits until it is
    ready. A warm-up holds its CPUs until then, so the warm-ups land on as many workers as
    will run trials; it is the same Ray function as a trial, so Ray hands the warmed worker
    the next trial directly."""
    from molen.compute.zygote import run_trial, start

    if archive is None:
        start()
        return {}
    from molen.pipeline.experiments import apply_params

    folder = Path(tempfile.mkdtemp(prefix="molen-trial-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as unpacked:
            unpacked.extractall(folder, filter="data")
        project = folder / "project"
        apply_params(project, overrides)
        code, output = run_trial(project, targets, env)
        report = project / ".molen-report.json"
        outcome = json.loads(report.read_text()) if report.exists() else {}
        return {"run_id": outcome.get("run_id"), "ok": code == 0, "output": output}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


#: a project archive up to this size travels inside each trial's task (Ray inlines small
#: arguments); a larger one is put in Ray's object store once and fetched by each worker
INLINE_ARCHIVE = 64 * 1024


class Sweep:
    """The trials of one sweep on the cluster: :meth:`warm_up` first (workers and their
    zygotes start while the driver packs the project), then :meth:`run`."""

    def __init__(self, ray: Any, resources: dict[str, Any]):
        self.ray = ray
        self.resources = resources
        self.remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, **resources)(trial)

    def warm_up(self, trials: int) -> None:
        """Start, now, as many workers as will run trials at once, with their zygotes;
        nothing waits for these tasks."""
        per_trial = float(self.resources.get("num_cpus", 1) or 1)
        slots = int(self.ray.cluster_resources().get("CPU", 0) // per_trial) if per_trial else trials
        for _ in range(max(1, min(trials, slots))):
            self.remote.options(max_retries=0).remote(None, {}, [], {})

    def run(
        self,
        archive: bytes,
        trials: list[tuple[dict[str, Any], dict[str, str]]],
        targets: list[str],
        *,
        on_done: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Run every ``(overrides, env)`` trial of the project ``archive`` (see
        :func:`pack_project`) as a Ray task and return their results in order;
        ``on_done(index, result)`` as each finishes. Ctrl-C cancels the trials still running
        or waiting."""
        shipped: Any = archive if len(archive) <= INLINE_ARCHIVE else self.ray.put(archive)
        pending = {
            self.remote.remote(shipped, overrides, targets, env): index
            for index, (overrides, env) in enumerate(trials)
        }
        results: list[dict[str, Any] | None] = [None] * len(trials)
        for index, found, error in completed(self.ray, pending):
            if error is not None:  # the worker died more than MAX_RETRIES times
                found = {"run_id": None, "ok": False, "output": f"the trial failed on the cluster: {error}"}
            results[index] = found
            if on_done is not None:
                on_done(index, found)
        return [r if r is not None else {"run_id": None, "ok": False, "output": ""} for r in results]


def completed(ray: Any, pending: dict[Any, int]) -> Iterator[tuple[int, Any, Exception | None]]:
    """The tasks of ``pending`` (Ray ref → index) as each finishes: ``(index, result, None)``
    or ``(index, None, error)``. Whatever is left is cancelled when the caller stops early
    (Ctrl-C, an error of its own)."""
    try:
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                index = pending.pop(ref)
                try:
                    result, error = ray.get(ref), None
                except Exception as exc:
                    result, error = None, exc
                yield index, result, error
    finally:
        if pending:
            cancel(ray, list(pending))


def cancel(ray: Any, refs: list[Any], *, wait: float = 30.0) -> None:
    """Cancel ``refs`` and give them ``wait`` seconds to stop (a trial ends its run KILLED on
    the way out) before the driver exits, which would kill their workers outright."""
    for ref in refs:
        ray.cancel(ref)
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=wait)


# -- pipeline stages on the cluster (molen repro --executor ray) ------------------------------------


def run_stage(
    archive: bytes,
    deps: dict[str, dict[str, Any]],
    cmd: str,
    wdir: str,
    products: list[str],
    env: dict[str, str],
) -> dict[str, Any]:
    """What a worker does for one stage (the body of its Ray task): unpack the project, check
    the data deps out of the shared object store (``deps``: path → pointer; the code travels in
    the archive), run ``cmd``, store the products in the shared object store; answers
    ``{"outs": {path: pointer}}`` or ``{"error": …, "output": …}``."""
    from molen.data.pointer import Pointer
    from molen.data.tracked import DataSession
    from molen.workspace import open_workspace

    folder = Path(tempfile.mkdtemp(prefix="molen-stage-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as unpacked:
            unpacked.extractall(folder, filter="data")
        project = folder / "project"
        stores = {"tracking.uri": env["MOLEN_TRACKING_URI"], "objects.url": env["MOLEN_OBJECTS_URL"]}
        os.environ.update({k: v for k, v in env.items() if k.startswith("MOLEN_OBJECTS_")})
        session = DataSession(open_workspace(project, flags=stores))
        try:
            for path, pointer in deps.items():
                if not (project / path).exists():
                    session.materialize(path, Pointer(**pointer), ignore=False)
            environment = {
                **os.environ,
                "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
                **env,
            }
            done = subprocess.run(
                cmd, shell=True, cwd=project / wdir, env=environment, capture_output=True, text=True, **_CHILD
            )
            output = (done.stdout or "") + (done.stderr or "")
            if done.returncode != 0:
                return {"error": f"`{cmd}` exited with {done.returncode} on the cluster", "output": output}
            absent = [path for path in products if not os.path.lexists(project / path)]
            if absent:
                return {"error": f"it did not create {absent[0]}, which molen.yaml lists", "output": output}
            outs = {path: session.snapshot(project / path)._asdict() for path in products}
            return {"outs": outs, "output": output}
        finally:
            session.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class RayStages:
    """Runs `molen repro`'s stages as Ray tasks (see :func:`run_stage`); the project is packed
    once, without its tracked data and the stages' products, which travel through the store."""

    def __init__(
        self, ray: Any, session: DataSession, pipeline: Any, shared: dict[str, str], config: dict[str, Any]
    ):
        self.ray = ray
        self.shared = shared
        self.remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(run_stage)
        self.resources = {name: resources_of(config, "stages", name) for name in pipeline.stages}
        products = {path for stage in pipeline.stages.values() for path in stage.products}
        self.archive = ray.put(pack_tree(session.project.root, session, exclude=products))

    def leave(self) -> None:
        """Leave the cluster (see :func:`leave`)."""
        leave(self.ray)

    def run(self, stage: Any, deps: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
        """Run ``stage`` on the cluster; its products' pointers (path → Pointer)."""
        from molen.data.pointer import Pointer

        task = self.remote.options(**self.resources[stage.name]).remote(
            self.archive,
            {path: pointer._asdict() for path, pointer in deps.items()},
            stage.cmd,
            stage.wdir,
            list(stage.products),
            {**self.shared, **env},
        )
        try:
            answer = self.ray.get(task)
        except BaseException:
            self.ray.cancel(task)
            raise
        if "error" in answer:
            tail = "\n".join(answer.get("output", "").rstrip().splitlines()[-20:])
            raise StageError(f"stage {stage.name}: {answer['error']}" + (f"\n{tail}" if tail else ""))
        return {path: Pointer(**pointer) for path, pointer in answer["outs"].items()}


class StageError(UsageError):
    """A stage that failed on the cluster (reported like a local failure)."""

    exit_code = 1

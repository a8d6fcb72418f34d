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
trials not finished (their `molen repro` gets SIGTERM, so their runs end KILLED).

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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from molen.errors import UsageError

if TYPE_CHECKING:
    from molen.data.tracked import DataSession
    from molen.workspace import Workspace

__all__ = ["connect", "pack_project", "require_shared_stores", "resources_of", "run_trials", "trial"]

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


def resources_of(config: dict[str, Any]) -> dict[str, Any]:
    """What each trial asks of the cluster, from ``molen.yaml``'s ``ray.trial`` (``cpus``,
    ``gpus``, ``memory`` such as ``2GB``): Ray's ``num_cpus``, ``num_gpus`` and ``memory``."""
    section = (config.get("ray") or {}).get("trial") or {}
    if not isinstance(section, dict):
        raise UsageError("molen.yaml: ray.trial must be a mapping (cpus, gpus, memory)")
    unknown = set(section) - {"cpus", "gpus", "memory"}
    if unknown:
        raise UsageError(
            f"molen.yaml: ray.trial has no setting {sorted(unknown)[0]!r}; use cpus, gpus, memory"
        )
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
            "molen.yaml: ray.trial wants numbers: cpus: 1, gpus: 0, memory: 2GB (KB, MB, GB or bytes)"
        ) from None
    if found["num_cpus"] < 0 or found.get("num_gpus", 0) < 0:
        raise UsageError("molen.yaml: ray.trial cpus and gpus cannot be negative")
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
    return ray


def pack_project(copy: Path, session: DataSession) -> bytes:
    """The working copy ``copy`` as a gzipped tar, without the tracked data (workers check it
    out of the shared object store; its pointer files travel)."""
    tracked = {t.path for t in session.tracked()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:

        def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            relative = info.name.split("/", 1)[1] if "/" in info.name else ""
            if relative in tracked or any(relative.startswith(path + "/") for path in tracked):
                return None
            return info

        archive.add(copy, arcname="project", filter=keep)
    return buffer.getvalue()


def trial(archive: bytes, targets: list[str], env: dict[str, str]) -> dict[str, Any]:
    """What a worker does for one trial (the body of the Ray task): unpack, check the tracked
    data out, `molen repro`; the run id it recorded, whether it succeeded, and its output."""
    folder = Path(tempfile.mkdtemp(prefix="molen-trial-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as unpacked:
            unpacked.extractall(folder, filter="data")
        project = folder / "project"
        report = folder / "report.json"
        environment = {**os.environ, **env, "MOLEN_REPRO_REPORT": str(report)}
        checkout = subprocess.run(
            [sys.executable, "-m", "molen", "data", "checkout"],
            cwd=project,
            env=environment,
            capture_output=True,
            text=True,
        )
        if checkout.returncode != 0:
            return {"run_id": None, "ok": False, "output": checkout.stdout + checkout.stderr}
        process = subprocess.Popen(
            [sys.executable, "-m", "molen", "repro", *targets],
            cwd=project,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            output, _ = process.communicate()
        except BaseException:  # cancelled (Ctrl-C on the driver): the run ends KILLED
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
        outcome = json.loads(report.read_text()) if report.exists() else {}
        return {"run_id": outcome.get("run_id"), "ok": process.returncode == 0, "output": output or ""}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_trials(
    ray: Any,
    trials: list[tuple[bytes, dict[str, str]]],
    targets: list[str],
    *,
    resources: dict[str, Any],
    on_done: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every ``(archive, env)`` trial as a Ray task with ``resources`` (num_cpus, memory,
    num_gpus) and return their results in order; ``on_done(index, result)`` as each finishes.
    Ctrl-C cancels the trials still running or waiting."""
    remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, **resources)(trial)
    pending = {remote.remote(archive, targets, env): index for index, (archive, env) in enumerate(trials)}
    results: list[dict[str, Any] | None] = [None] * len(trials)
    try:
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                index = pending.pop(ref)
                try:
                    found = ray.get(ref)
                except Exception as exc:  # the worker died more than MAX_RETRIES times
                    found = {"run_id": None, "ok": False, "output": f"the trial failed on the cluster: {exc}"}
                results[index] = found
                if on_done is not None:
                    on_done(index, found)
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise
    return [r if r is not None else {"run_id": None, "ok": False, "output": ""} for r in results]

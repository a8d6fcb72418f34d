"""Reading runs back: get, search, metric history, and telling dead runs from running ones.

A run whose process died without ending it (``kill -9``, a lost machine) would stay RUNNING
forever. Before answering, readers check every RUNNING run: on this host, is its process
(same pid, same start time) alive? Elsewhere, has its heartbeat gone silent for four
intervals? A dead run is marked KILLED, ending at its last heartbeat.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from molen.entities import Metric, RunRecord, RunStatus
from molen.query import parse_filter, parse_sort
from molen.tracking.validation import check_key
from molen.workspace import Workspace, open_workspace

if TYPE_CHECKING:
    from molen.stores.metadata.sql import SqlMetadataStore

__all__ = ["get_metric_history", "get_run", "reap_dead_runs", "search_runs"]


def _process_alive(pid: int, started: float | None) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - started) > 1.0:
            return False  # the pid was reused by another process
        return process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def reap_dead_runs(store: SqlMetadataStore, *, heartbeat_interval: float) -> list[str]:
    """Mark RUNNING runs whose process is gone as KILLED; return their ids."""
    running = store.running_runs()
    if not running:
        return []
    host = socket.gethostname()
    now = int(time.time() * 1000)
    silent_after = int(heartbeat_interval * 4 * 1000)
    dead = []
    for run_id, run_host, pid, pid_started, heartbeat in running:
        if run_host == "mlflow-client":  # MLflow has no heartbeat: its client ends its runs
            continue
        if run_host == host and pid is not None:
            alive = _process_alive(pid, pid_started)
        else:
            alive = heartbeat is not None and now - heartbeat < silent_after
        if not alive and store.end_run(run_id, RunStatus.KILLED, heartbeat or now, only_if_running=True):
            dead.append(run_id)
    return dead


def _reaped(workspace: Workspace) -> SqlMetadataStore:
    store = workspace.metadata
    reap_dead_runs(store, heartbeat_interval=float(workspace.settings["tracking.heartbeat_interval"]))
    return store


def get_run(run_id: str, *, workspace: Workspace | None = None) -> RunRecord:
    """Everything recorded about a run: params, latest metrics, tags, status, inputs, artifacts.

    ``run_id`` may be any unique prefix of the id. Example: ``molen.get_run("3f2a")``
    """
    workspace = workspace or open_workspace()
    store = _reaped(workspace)
    return store.get_run(store.resolve_run_id(run_id))


def search_runs(
    filter: str | None = None,
    experiment: str | list[str] | None = None,
    order_by: str | None = None,
    *,
    limit: int | None = None,
    deleted: bool = False,
    as_frame: bool = False,
    workspace: Workspace | None = None,
) -> Any:
    """Runs matching ``filter`` (the run filter language), newest first unless ``order_by``.

    Returns a list of :class:`RunRecord`, or a pandas DataFrame with one column per attribute,
    ``params.*``, ``metrics.*`` and ``tags.*`` when ``as_frame`` is true.
    Example: ``molen.search_runs("metrics.auc > 0.9", order_by="-metrics.auc")``
    """
    workspace = workspace or open_workspace()
    where = parse_filter(filter) if filter and filter.strip() else None
    sort = parse_sort(order_by) if order_by else ()
    names = None if experiment is None else [experiment] if isinstance(experiment, str) else list(experiment)
    from molen.stores.metadata.lite import search_runs_lite

    # a SQLite store is read without importing SQLAlchemy when it can be (see .lite)
    records = search_runs_lite(
        str(workspace.settings["tracking.uri"] or ""), where, names, sort, limit=limit, deleted=deleted
    )
    if records is None:
        store = _reaped(workspace)
        experiment_ids = None if names is None else [store.get_experiment(name).id for name in names]
        records = store.search_runs(
            where=where, experiment_ids=experiment_ids, sort=sort, limit=limit, deleted=deleted
        )
    return records_to_frame(records) if as_frame else records


def records_to_frame(records: list[RunRecord]) -> Any:
    """A pandas DataFrame of runs, one row each (needs pandas: ``molen[frames]``)."""
    from molen.errors import MissingDependencyError

    try:
        import pandas as pd
    except ImportError:
        raise MissingDependencyError("as_frame=True needs pandas: pip install 'molen[frames]'") from None
    rows = []
    for record in records:
        row: dict[str, Any] = {
            "run_id": record.id,
            "experiment": record.experiment,
            "name": record.name,
            "status": record.status,
            "start_time": pd.Timestamp(record.start_time, unit="ms", tz="UTC"),
            "end_time": None
            if record.end_time is None
            else pd.Timestamp(record.end_time, unit="ms", tz="UTC"),
            "parent_id": record.parent_id,
        }
        row.update({f"params.{k}": v for k, v in record.params.items()})
        row.update({f"metrics.{k}": v for k, v in record.metrics.items()})
        row.update({f"tags.{k}": v for k, v in record.tags.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def get_metric_history(run_id: str, key: str, *, workspace: Workspace | None = None) -> list[Metric]:
    """Every value logged for metric ``key`` of a run, by step then time."""
    workspace = workspace or open_workspace()
    store = workspace.metadata
    return store.metric_history(store.resolve_run_id(run_id), check_key(key, "metric"))

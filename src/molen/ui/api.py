"""The JSON the web UI's pages read: one request per page view, shaped for the page.

Everything here reads the same stores as molen's REST API (``request.app.state.stores``), so the
UI works the same from ``molen ui`` on a project's SQLite store and from ``molen server`` in
front of PostgreSQL. A page of the runs table is one ``search_runs`` with a limit (the store
sorts and filters in SQL, with the CLI's filter language) and one count; a run's charts are one
metric history per key, thinned to at most :data:`MAX_POINTS` points. The few actions (tag a run,
move an alias, delete a run) are POSTs, so ``molen server --auth`` lets only write tokens do them.
"""

from __future__ import annotations

import math
import mimetypes
from dataclasses import asdict
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Body, Query, Request, Response

from molen.entities import json_number
from molen.errors import InvalidValueError, NotFoundError

if TYPE_CHECKING:
    from molen.entities import Metric, RunRecord
    from molen.stores.metadata.sql import SqlMetadataStore
    from molen.stores.objects.base import ObjectStore

__all__ = ["MAX_POINTS", "router"]

PREFIX = "/api/molen/v1/ui"
#: The most points a chart gets for one metric of one run (min and max of each bucket are kept).
MAX_POINTS = 2000
#: The largest page of the runs table.
MAX_PAGE = 500
#: Artifacts shown inline up to this size; larger ones are offered as downloads.
MAX_PREVIEW = 20 * 1024**2

router = APIRouter(prefix=PREFIX, tags=["ui"])


def _answer(data: Any) -> Response:
    """``data`` as JSON, straight to bytes (orjson; FastAPI's own encoder walks every value in
    Python, which costs more than the query for a page of fifty runs with fifty metrics)."""
    import orjson

    return Response(orjson.dumps(data), media_type="application/json")


def _metadata(request: Request) -> SqlMetadataStore:
    store: SqlMetadataStore = request.app.state.stores.metadata
    return store


def _objects(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.stores.objects
    return store


_number = json_number  # a metric value JSON can carry (NaN and infinities as strings)


def _row(record: RunRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "experiment": record.experiment,
        "status": record.status,
        "start_time": record.start_time,
        "end_time": record.end_time,
        "duration_ms": record.duration_ms,
        "user": record.user,
        "parent_id": record.parent_id,
        "commit": record.tags.get("molen.git.commit"),
        "dirty": record.tags.get("molen.git.dirty") == "true",
        "params": record.params,
        "metrics": {key: _number(value) for key, value in record.metrics.items()},
        "tags": {key: value for key, value in record.tags.items() if not key.startswith("molen.")},
    }


def _experiment_ids(store: SqlMetadataStore, experiment: str | None) -> list[int] | None:
    if not experiment:
        return None
    for found in store.list_experiments():
        if found.name == experiment or str(found.id) == experiment:
            return [found.id]
    raise NotFoundError(f"no experiment {experiment!r}")


@router.get("/experiments")
def experiments(request: Request) -> dict[str, Any]:
    """Every experiment with its number of runs."""
    return {"experiments": [asdict(e) for e in _metadata(request).list_experiments()]}


@router.get("/runs")
def runs(
    request: Request,
    experiment: str | None = None,
    filter: str = "",
    sort: str = "-start_time",
    page: int = Query(1, ge=1),
    size: int = Query(50, ge=1, le=MAX_PAGE),
    deleted: bool = False,
) -> Response:
    """One page of runs, filtered (the CLI's filter language) and sorted in the store. A filter
    or sort that does not parse is the user's typo, not a failed request: the answer is an
    empty page with ``filter_error`` saying what is wrong."""
    from molen.errors import MolenError
    from molen.query import parse_filter, parse_sort

    store = _metadata(request)
    ids = _experiment_ids(store, experiment)
    try:
        where = parse_filter(filter) if filter.strip() else None
        order = parse_sort(sort) if sort.strip() else []
    except MolenError as exc:
        return _answer(
            {"total": 0, "page": 1, "size": size, "last_page": 1, "rows": [], "filter_error": exc.message}
        )
    found = store.search_runs(
        where=where, experiment_ids=ids, sort=order, limit=size, offset=(page - 1) * size, deleted=deleted
    )
    total = store.count_runs(where=where, experiment_ids=ids, deleted=deleted)
    inputs = store.inputs_of([r.id for r in found])
    rows = []
    for record in found:
        row = _row(record)
        row["data"] = [
            {"path": i.path, "digest": i.digest, "role": i.role} for i in inputs.get(record.id, [])
        ]
        rows.append(row)
    return _answer(
        {"total": total, "page": page, "size": size, "last_page": max(1, -(-total // size)), "rows": rows}
    )


@router.get("/columns")
def columns(request: Request) -> dict[str, list[str]]:
    """Every param and metric name in the store (for the column chooser; a run without one
    shows an empty cell)."""
    return _metadata(request).column_names()


@router.get("/runs/{run_id}")
def run(request: Request, run_id: str, history: int = Query(0, ge=0, le=100)) -> Response:
    """A run: params, latest metrics, tags (molen's own apart), artifacts, data inputs, the model
    versions registered from it, its parent and children; with ``history=N``, the histories of
    its first N metrics too (the page's charts arrive with the page)."""
    store = _metadata(request)
    record = store.get_run(store.resolve_run_id(run_id))
    row = _row(record)
    row["system_tags"] = {k: v for k, v in record.tags.items() if k.startswith("molen.")}
    row["host"] = record.host
    row["artifacts"] = [{"path": a.path, "digest": a.digest, "size": a.size} for a in record.artifacts]
    row["data"] = [
        {
            "path": i.path,
            "digest": i.digest,
            "role": i.role,
            "kind": i.kind,
            "size": i.size,
            "files": i.file_count,
        }
        for i in record.inputs
    ]
    row["models"] = [
        {"name": v.name, "version": v.version, "aliases": list(v.aliases), "flavor": v.flavor}
        for v in store.registry.versions_of_runs([record.id])
    ]
    from molen.query import parse_filter

    children = store.search_runs(where=parse_filter(f"parent_id = '{record.id}'"), limit=200)
    row["children"] = [{"id": c.id, "name": c.name, "status": c.status} for c in children]
    if history:
        keys = sorted(record.metrics)[:history]
        row["series"] = {k: thin(v) for k, v in store.metric_histories(record.id, keys).items()}
    return _answer(row)


def thin(history: list[Metric], most: int = MAX_POINTS) -> list[list[float | str | int]]:
    """``[step, value, timestamp]`` of each point, at most ``most`` of them: beyond that, the
    lowest and the highest value of each of ``most // 2`` buckets (spikes stay visible)."""
    points = [[m.step, _number(m.value), m.timestamp] for m in history]
    if len(points) <= most:
        return points
    buckets = most // 2
    kept: list[list[float | str | int]] = []
    for index in range(buckets):
        chunk = history[index * len(history) // buckets : (index + 1) * len(history) // buckets]
        finite = [m for m in chunk if math.isfinite(m.value)] or chunk
        low = min(finite, key=lambda m: m.value)
        high = max(finite, key=lambda m: m.value)
        for m in sorted({id(low): low, id(high): high}.values(), key=lambda m: (m.step, m.timestamp)):
            kept.append([m.step, _number(m.value), m.timestamp])
    return kept


@router.get("/metrics")
def metrics(request: Request, runs: str, keys: str) -> Response:
    """The histories of metrics ``keys`` (comma-separated) of ``runs`` (comma-separated ids):
    ``{"series": {run: {key: [[step, value, time], …]}}}``, each thinned to MAX_POINTS."""
    store = _metadata(request)
    run_ids = [r for r in runs.split(",") if r][:50]
    wanted = [k for k in keys.split(",") if k][:100]
    if not run_ids or not wanted:
        raise InvalidValueError("name at least one run (runs=ID,…) and one metric (keys=NAME,…)")
    series = {rid: store.metric_histories(rid, wanted) for rid in run_ids}
    return _answer({"series": {rid: {k: thin(v) for k, v in found.items()} for rid, found in series.items()}})


@router.get("/compare")
def compare(request: Request, runs: str) -> dict[str, Any]:
    """Runs side by side: every param, latest metric, data input and commit, with the keys whose
    values differ marked."""
    store = _metadata(request)
    run_ids = [store.resolve_run_id(r) for r in runs.split(",") if r][:20]
    if len(run_ids) < 2:
        raise InvalidValueError("compare takes at least two runs: runs=ID,ID")
    records = [store.get_run(r) for r in run_ids]

    def table(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = sorted({k for v in values for k in v})
        return [
            {
                "key": k,
                "values": [v.get(k) for v in values],
                "differs": len({repr(v.get(k)) for v in values}) > 1,
            }
            for k in keys
        ]

    return {
        "runs": [_row(r) for r in records],
        "params": table([r.params for r in records]),
        "metrics": table([{k: _number(v) for k, v in r.metrics.items()} for r in records]),
        "data": table([{i.path: i.digest for i in r.inputs} for r in records]),
        "code": table([{k: v for k, v in r.tags.items() if k.startswith("molen.git.")} for r in records]),
    }


@router.get("/runs/{run_id}/artifacts/{path:path}")
def artifact(request: Request, run_id: str, path: str) -> Response:
    """An artifact's bytes for a preview (or a download): images, text and JSON inline, HTML
    reports in a sandboxed frame (no scripts of theirs run with the UI's rights)."""
    store = _metadata(request)
    record = store.get_run(store.resolve_run_id(run_id))
    found = next((a for a in record.artifacts if a.path == path), None)
    if found is None:
        raise NotFoundError(f"run {record.id[:8]} has no artifact {path!r}")
    if found.size > MAX_PREVIEW and request.query_params.get("download") is None:
        raise InvalidValueError(f"{path} is {found.size:,} bytes; download it with ?download=1")
    data = _objects(request).get_bytes(found.digest)
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if kind.startswith("text/") or path.endswith((".json", ".yaml", ".yml", ".log", ".md", ".csv")):
        kind = "text/html; charset=utf-8" if kind == "text/html" else "text/plain; charset=utf-8"
    headers = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
    if request.query_params.get("download") is not None:
        headers["Content-Disposition"] = f'attachment; filename="{path.rsplit("/", 1)[-1]}"'
    return Response(data, media_type=kind, headers=headers)


@router.post("/runs/{run_id}/tags")
def tag_run(request: Request, run_id: str, body: dict[str, str] = Body(...)) -> dict[str, Any]:
    """Set tags on a run (``{"key": "value"}``; molen's own ``molen.*`` tags are not editable)."""
    store = _metadata(request)
    if any(key.startswith("molen.") or not key.strip() for key in body):
        raise InvalidValueError("tags starting with 'molen.' are molen's own; pick another name")
    full = store.resolve_run_id(run_id)
    store.log_batch(full, tags={k: str(v) for k, v in body.items()})
    return {"tags": {k: v for k, v in store.get_run(full).tags.items() if not k.startswith("molen.")}}


@router.post("/runs/{run_id}/delete")
def delete_run(request: Request, run_id: str, restore: bool = False) -> dict[str, str]:
    """Mark a run deleted (hidden, restorable with ``restore=true``), as ``molen runs delete``."""
    store = _metadata(request)
    full = store.resolve_run_id(run_id)
    store.set_lifecycle([full], "active" if restore else "deleted")
    return {"id": full, "lifecycle": "active" if restore else "deleted"}


@router.get("/models")
def models(request: Request) -> dict[str, Any]:
    """Every registered model with its versions count and aliases."""
    return {"models": [m.to_dict() for m in _metadata(request).registry.list_models()]}


@router.get("/models/{name}")
def model(request: Request, name: str) -> dict[str, Any]:
    """A model: its versions (with run, aliases, flavor), the history of every alias, gate
    verdicts, and the global feature importance of each version that has one."""
    from molen.models.package import read_manifest

    store = _metadata(request)
    registry = store.registry
    versions = registry.list_versions(name)
    details = []
    runs = {}
    for run_id in {v.run_id for v in versions[:100] if v.run_id}:  # the newest hundred versions
        try:
            runs[run_id] = store.get_run(run_id)
        except NotFoundError:  # the run was purged; the version stays
            continue
    for version in versions:
        entry = version.to_dict()
        made = runs.get(version.run_id or "")
        entry["lineage"] = (
            None
            if made is None
            else {
                "run": made.name,
                "commit": made.tags.get("molen.git.commit"),
                "data": [{"path": i.path, "digest": i.digest, "role": i.role} for i in made.inputs],
            }
        )
        if version.flavor != "mlflow":
            try:
                manifest = read_manifest(_objects(request), version.digest)
            except (NotFoundError, OSError):
                manifest = {}
            entry["importance"] = manifest.get("importance") or {}
            entry["task"] = manifest.get("task")
            entry["metrics"] = manifest.get("metrics") or {}
        details.append(entry)
    return {
        "name": name,
        "versions": details,
        "history": [e.to_dict() for e in registry.alias_history(name)],
        "verdicts": [asdict(v) for v in registry.verdicts(name)],
    }


@router.get("/models/{name}/{version}/card")
def card(request: Request, name: str, version: int) -> Response:
    """The model card of ``name/version`` as a self-contained HTML page."""
    from molen.registry.service import model_card

    shim: Any = SimpleNamespace(metadata=_metadata(request), objects=_objects(request))
    page = model_card(f"{name}/{version}", html=True, workspace=shim)
    return Response(
        page, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": "sandbox"}
    )


@router.get("/models/{name}/{version}/lineage")
def lineage(request: Request, name: str, version: int) -> dict[str, Any]:
    """From the version to its run, the run's data inputs and commit."""
    store = _metadata(request)
    found = store.registry.get_version(name, version)
    if found.run_id is None:
        return {"version": found.to_dict(), "run": None}
    record = store.get_run(found.run_id)
    return {
        "version": found.to_dict(),
        "run": _row(record),
        "data": [{"path": i.path, "digest": i.digest, "role": i.role} for i in record.inputs],
    }


@router.post("/models/{name}/aliases/{alias}")
def move_alias(request: Request, name: str, alias: str, body: dict[str, int] = Body(...)) -> dict[str, Any]:
    """Point ``alias`` at ``{"version": N}`` (kept in the alias history, as `molen models alias`)."""
    from molen.registry.service import check_alias

    check_alias(alias)
    if "version" not in body:
        raise InvalidValueError('give the version to point at: {"version": N}')
    event = _metadata(request).registry.set_alias(name, alias, int(body["version"]), user="molen ui")
    return event.to_dict()

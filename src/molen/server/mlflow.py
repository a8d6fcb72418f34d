"""MLflow's tracking REST API on ``molen server``, so code full of ``mlflow.log_metric`` logs into
molen unchanged (``mlflow.set_tracking_uri("http://host:5000")``).

The routes and bodies follow what the ``mlflow`` 3.x client sends and expects
(``../shared/reference/mlflow-tracking-rest.md``): GET parameters in the query string, POST bodies
in JSON, both ``run_id`` and ``run_uuid`` accepted, ids as strings, times in milliseconds, an
empty success body ``{}``, and errors as ``{"error_code", "message"}`` with the status the client
depends on (404 ``RESOURCE_DOES_NOT_EXIST`` from get-by-name means "create it"; a client error is
never a 5xx, because the client retries those for minutes).

This part covers experiments, runs, params, metrics (single and batched), tags, run updates,
searches with MLflow's filter syntax (molen's filter language reads it) and metric histories.
Runs the MLflow client creates are never reaped as dead: MLflow has no heartbeat, so they end
when the client ends them.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from molen.errors import ConflictError, MolenError, NotFoundError, StoreError, UsageError

if TYPE_CHECKING:
    from molen.entities import RunRecord
    from molen.stores.metadata.sql import SqlMetadataStore

__all__ = ["MLFLOW_HOST", "router"]

PREFIX = "/api/2.0/mlflow"
#: The host recorded for runs the MLflow client made (no pid, no heartbeat: never reaped).
MLFLOW_HOST = "mlflow-client"
_STATUS = {"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"}

router = APIRouter(tags=["mlflow"])


class MlflowError(Exception):
    """An error in MLflow's terms."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def error_response(exc: MlflowError) -> JSONResponse:
    return JSONResponse({"error_code": exc.code, "message": exc.message}, status_code=exc.status)


def _translated(exc: MolenError) -> MlflowError:
    if isinstance(exc, NotFoundError):
        return MlflowError("RESOURCE_DOES_NOT_EXIST", exc.message, 404)
    if isinstance(exc, ConflictError):
        return MlflowError("INVALID_PARAMETER_VALUE", exc.message, 400)
    if isinstance(exc, UsageError):
        return MlflowError("INVALID_PARAMETER_VALUE", exc.message, 400)
    return MlflowError("TEMPORARILY_UNAVAILABLE", exc.message, 503)


def _store(request: Request) -> SqlMetadataStore:
    store: SqlMetadataStore = request.app.state.stores.metadata
    return store


def _run_id(values: dict[str, Any]) -> str:
    found = values.get("run_id") or values.get("run_uuid")
    if not found:
        raise MlflowError("INVALID_PARAMETER_VALUE", "Missing value for required parameter 'run_id'", 400)
    return str(found)


async def _body(request: Request) -> dict[str, Any]:
    import json

    raw = await request.body()
    try:
        found = json.loads(raw or b"{}")
    except ValueError:
        raise MlflowError("MALFORMED_REQUEST", "the request body is not JSON", 400) from None
    if not isinstance(found, dict):
        raise MlflowError("MALFORMED_REQUEST", "the request body must be a JSON object", 400)
    return found


def _experiment(
    store: SqlMetadataStore, *, name: str | None = None, ident: str | None = None
) -> dict[str, Any]:
    for found in store.list_experiments():
        if (name is not None and found.name == name) or (ident is not None and str(found.id) == str(ident)):
            return {
                "experiment_id": str(found.id),
                "name": found.name,
                "artifact_location": f"mlflow-artifacts:/{found.id}",
                "lifecycle_stage": "active" if found.lifecycle == "active" else "deleted",
                "last_update_time": found.created_at,
                "creation_time": found.created_at,
                "tags": [],
            }
    what = f"name '{name}'" if name is not None else f"ID '{ident}'"
    raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"Could not find experiment with {what}", 404)


def _run_info(record: RunRecord) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_uuid": record.id,
        "run_id": record.id,
        "run_name": record.name,
        "experiment_id": str(record.experiment_id),
        "user_id": record.user or "",
        "status": record.status,
        "start_time": record.start_time,
        "artifact_uri": f"mlflow-artifacts:/{record.experiment_id}/{record.id}/artifacts",
        "lifecycle_stage": "active" if record.lifecycle == "active" else "deleted",
    }
    if record.end_time is not None:
        info["end_time"] = record.end_time
    return info


def _run(record: RunRecord, store: SqlMetadataStore) -> dict[str, Any]:
    metrics = []
    for key in sorted(record.metrics):
        history = store.metric_history(record.id, key)
        last = history[-1] if history else None
        metrics.append(
            {
                "key": key,
                "value": record.metrics[key],
                "timestamp": last.timestamp if last else record.start_time,
                "step": last.step if last else 0,
            }
        )
    tags = dict(record.tags)
    tags.setdefault("mlflow.runName", record.name)
    return {
        "info": _run_info(record),
        "data": {
            "metrics": metrics,
            "params": [{"key": k, "value": v} for k, v in sorted(record.params.items())],
            "tags": [{"key": k, "value": v} for k, v in sorted(tags.items())],
        },
        "inputs": {},
        "outputs": {},
    }


def _pairs(items: Any, what: str) -> dict[str, str]:
    found = {}
    for item in items or []:
        if not isinstance(item, dict) or "key" not in item:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"every {what} needs a key", 400)
        found[str(item["key"])] = str(item.get("value", ""))
    return found


def _metrics(items: Any) -> list[Any]:
    from molen.entities import Metric

    now = int(time.time() * 1000)
    found = []
    for item in items or []:
        try:
            found.append(
                Metric(
                    str(item["key"]),
                    float(item["value"]),
                    int(item.get("step") or 0),
                    int(item.get("timestamp") or now),
                )
            )
        except (KeyError, TypeError, ValueError):
            raise MlflowError(
                "INVALID_PARAMETER_VALUE", "a metric needs a key and a numeric value", 400
            ) from None
    return found


def _handle(call: Any) -> Any:
    try:
        return call()
    except MlflowError as exc:
        return error_response(exc)
    except MolenError as exc:
        return error_response(_translated(exc))


@router.get(f"{PREFIX}/experiments/get-by-name")
def get_experiment_by_name(request: Request, experiment_name: str = "") -> Any:
    """The experiment called ``experiment_name`` (404 RESOURCE_DOES_NOT_EXIST: the client creates it)."""
    return _handle(lambda: {"experiment": _experiment(_store(request), name=experiment_name)})


@router.get(f"{PREFIX}/experiments/get")
def get_experiment(request: Request, experiment_id: str = "") -> Any:
    """The experiment with this id."""
    return _handle(lambda: {"experiment": _experiment(_store(request), ident=experiment_id)})


@router.post(f"{PREFIX}/experiments/create")
async def create_experiment(request: Request) -> Any:
    """A new experiment (400 RESOURCE_ALREADY_EXISTS if the name is taken)."""

    def create(body: dict[str, Any]) -> Any:
        store = _store(request)
        name = str(body.get("name") or "")
        if not name:
            raise MlflowError("INVALID_PARAMETER_VALUE", "Missing value for required parameter 'name'", 400)
        if any(found.name == name for found in store.list_experiments()):
            raise MlflowError("RESOURCE_ALREADY_EXISTS", f"Experiment '{name}' already exists.", 400)
        return {"experiment_id": str(store.get_or_create_experiment(name).id)}

    return await _posted(request, create)


async def _posted(request: Request, action: Any) -> Any:
    """Parse the JSON body and answer ``action(body)``, errors in MLflow's terms."""
    try:
        body = await _body(request)
    except MlflowError as exc:
        return error_response(exc)
    return _handle(lambda: action(body))


@router.post(f"{PREFIX}/runs/create")
async def create_run(request: Request) -> Any:
    """A new RUNNING run in ``experiment_id`` (its name from ``run_name`` or the tag mlflow.runName)."""

    def create(body: dict[str, Any]) -> Any:
        from molen.tracking.runs import _generated_name

        store = _store(request)
        experiment = _experiment(store, ident=str(body.get("experiment_id") or "0"))
        tags = _pairs(body.get("tags"), "tag")
        name = str(body.get("run_name") or tags.get("mlflow.runName") or _generated_name())
        tags["mlflow.runName"] = name
        run_id = uuid.uuid4().hex
        store.create_run(
            run_id=run_id,
            experiment_id=int(experiment["experiment_id"]),
            name=name,
            start_time=int(body.get("start_time") or time.time() * 1000),
            user=str(body.get("user_id") or "") or None,
            host=MLFLOW_HOST,
            tags=tags,
        )
        return {"run": _run(store.get_run(run_id), store)}

    return await _posted(request, create)


@router.get(f"{PREFIX}/runs/get")
def get_run(request: Request, run_id: str = "", run_uuid: str = "") -> Any:
    """The run, with the latest value of each metric."""

    def read() -> Any:
        store = _store(request)
        return {"run": _run(store.get_run(_run_id({"run_id": run_id, "run_uuid": run_uuid})), store)}

    return _handle(read)


async def _log(request: Request, build: Any) -> Any:
    def log(body: dict[str, Any]) -> Any:
        store = _store(request)
        run_id = _run_id(body)
        params, tags, metrics = build(body)
        try:
            store.log_batch(
                run_id,
                params=params or None,
                tags=tags or None,
                metrics=metrics,
                heartbeat=int(time.time() * 1000),
            )
        except StoreError:
            store.get_run(run_id)  # a run that does not exist is the client's error: 404, not 503
            raise
        return {}

    return await _posted(request, log)


@router.post(f"{PREFIX}/runs/log-parameter")
async def log_parameter(request: Request) -> Any:
    """One param (a param never changes: another value is refused)."""
    return await _log(request, lambda body: (_pairs([body], "param"), {}, []))


@router.post(f"{PREFIX}/runs/log-metric")
async def log_metric(request: Request) -> Any:
    """One metric value at a step."""
    return await _log(request, lambda body: ({}, {}, _metrics([body])))


@router.post(f"{PREFIX}/runs/set-tag")
async def set_tag(request: Request) -> Any:
    """One tag (set again: replaced)."""
    return await _log(request, lambda body: ({}, _pairs([body], "tag"), []))


@router.post(f"{PREFIX}/runs/log-batch")
async def log_batch(request: Request) -> Any:
    """Params, tags and metrics of one run in one transaction."""
    return await _log(
        request,
        lambda body: (
            _pairs(body.get("params"), "param"),
            _pairs(body.get("tags"), "tag"),
            _metrics(body.get("metrics")),
        ),
    )


@router.post(f"{PREFIX}/runs/update")
async def update_run(request: Request) -> Any:
    """End the run (``status``, ``end_time``) or rename it (``run_name``)."""

    def update(body: dict[str, Any]) -> Any:
        store = _store(request)
        run_id = _run_id(body)
        status = str(body.get("status") or "")
        if status and status not in _STATUS:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"unknown run status {status!r}", 400)
        if body.get("run_name"):
            store.log_batch(run_id, tags={"mlflow.runName": str(body["run_name"])})
        if status and status not in {"RUNNING", "SCHEDULED"}:
            store.end_run(run_id, status, int(body.get("end_time") or time.time() * 1000))
        return {"run_info": _run_info(store.get_run(run_id))}

    return await _posted(request, update)


@router.post(f"{PREFIX}/runs/search")
async def search_runs(request: Request) -> Any:
    """Runs of ``experiment_ids`` matching ``filter`` (MLflow's syntax), ``order_by``, paged."""

    def search(body: dict[str, Any]) -> Any:
        from molen.query import parse_filter, parse_sort

        store = _store(request)
        text = str(body.get("filter") or "").strip()
        order = [str(item) for item in body.get("order_by") or []]
        sort = []
        for item in order:
            words = item.split()
            descending = len(words) > 1 and words[-1].upper() == "DESC"
            sort.extend(parse_sort(("-" if descending else "") + words[0].replace("`", "")))
        limit = int(body.get("max_results") or 1000)
        offset = int(body.get("page_token") or 0)
        view = str(body.get("run_view_type") or "ACTIVE_ONLY")
        ids = [int(found) for found in body.get("experiment_ids") or []]
        records = store.search_runs(
            where=parse_filter(text) if text else None,
            experiment_ids=ids or None,
            sort=sort or parse_sort("-start_time"),
            limit=limit + 1,
            offset=offset,
            deleted=view == "DELETED_ONLY",
        )
        answer: dict[str, Any] = {"runs": [_run(record, store) for record in records[:limit]]}
        if len(records) > limit:
            answer["next_page_token"] = str(offset + limit)
        return answer

    return await _posted(request, search)


@router.get(f"{PREFIX}/metrics/get-history")
def get_metric_history(request: Request, metric_key: str = "", run_id: str = "", run_uuid: str = "") -> Any:
    """Every value of one metric of a run, by step."""

    def history() -> Any:
        found = _store(request).metric_history(_run_id({"run_id": run_id, "run_uuid": run_uuid}), metric_key)
        return {
            "metrics": [
                {"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step} for m in found
            ]
        }

    return _handle(history)


@router.get("/api/3.0/mlflow/server-info")
def server_info() -> dict[str, Any]:
    """What the MLflow client asks before artifact transfers."""
    return {
        "store_type": "SqlStore",
        "workspaces_enabled": False,
        "multipart_uploads_enabled": False,
        "multipart_downloads_enabled": False,
    }

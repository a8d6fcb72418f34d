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

import re
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


# -- artifacts, logged models, the registry ----------------------------------------------------------
#
# A run's artifact is a molen artifact of that run (content-addressed bytes + a row). A logged
# model's files are artifacts of its source run under ``mlflow-models/<model id>/``, and its
# record (name, experiment, status, tags) a small named document of the object store. A model
# version registered by MLflow is a molen registry version with flavor ``mlflow`` whose digest is
# the MLmodel file's.

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MODELS = "mlflow-models"
_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")


def _clean_path(path: str) -> str:
    """An artifact path as stored: relative, no empty, ``.`` or ``..`` segments, no backslash or
    NUL (names only: bytes are stored by hash, so a name can never reach a file)."""
    lowered = path.lower()
    encoded = any(mark in lowered for mark in ("%2f", "%5c", "%00", "%2e"))  # separators still encoded
    if "\\" in path or "\x00" in path or path.startswith("/") or encoded:
        raise MlflowError("INVALID_PARAMETER_VALUE", "invalid artifact path", 400)
    parts = path.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise MlflowError("INVALID_PARAMETER_VALUE", "invalid artifact path", 400)
    return path


def _objects(request: Request) -> Any:
    return request.app.state.stores.objects


def _model_record(request: Request, model_id: str) -> dict[str, Any]:
    import json

    if not _MODEL_ID.fullmatch(model_id):
        raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"Logged model with ID '{model_id}' not found.", 404)
    try:
        found: dict[str, Any] = json.loads(_objects(request).get_named(f"mlflow/models/{model_id}"))
    except NotFoundError:
        raise MlflowError(
            "RESOURCE_DOES_NOT_EXIST", f"Logged model with ID '{model_id}' not found.", 404
        ) from None
    return found


def _save_model(request: Request, record: dict[str, Any]) -> None:
    import json

    record["last_updated_timestamp_ms"] = int(time.time() * 1000)
    _objects(request).put_named(f"mlflow/models/{record['model_id']}", json.dumps(record).encode())


def _model(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {
            "info": {**record, "tags": [{"key": k, "value": v} for k, v in record["tags"].items()]},
            "data": {},
        }
    }


def _where(request: Request, location: str) -> tuple[str, str]:
    """(run id, artifact path prefix) of ``EXP/RUN/artifacts[/…]`` or ``EXP/models/MODEL/artifacts[/…]``."""
    parts = location.strip("/").split("/")
    if len(parts) >= 3 and parts[2] == "artifacts" and re.fullmatch(r"[0-9a-f]{32}", parts[1]):
        return parts[1], "/".join(parts[3:])
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        record = _model_record(request, parts[2])
        inside = "/".join(parts[4:])
        return record["source_run_id"], f"{MODELS}/{parts[2]}" + (f"/{inside}" if inside else "")
    raise MlflowError("INVALID_PARAMETER_VALUE", "not an artifact location of this server", 400)


@router.put(f"{ARTIFACTS}/{{location:path}}")
async def upload_artifact(location: str, request: Request) -> Any:
    """Store one file of a run or of a logged model (the raw body)."""
    from molen.entities import Artifact

    try:
        run_id, path = _where(request, location)
        path = _clean_path(path)
        data = await request.body()
        digest = _objects(request).put_bytes(data)
        _store(request).add_artifact(run_id, Artifact(path, digest, len(data)))
    except MlflowError as exc:
        return error_response(exc)
    except MolenError as exc:
        return error_response(_translated(exc))
    return {}


@router.get(f"{ARTIFACTS}/{{location:path}}")
def download_artifact(location: str, request: Request) -> Any:
    """The bytes of one file of a run or of a logged model."""
    from fastapi.responses import Response

    def read() -> Any:
        run_id, path = _where(request, location)
        path = _clean_path(path)
        found = next((a for a in _store(request).get_run(run_id).artifacts if a.path == path), None)
        if found is None:
            raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"no artifact {path!r}", 404)
        return Response(_objects(request).get_bytes(found.digest), media_type="application/octet-stream")

    return _handle(read)


@router.get(ARTIFACTS)
def list_artifacts(request: Request, path: str = "") -> Any:
    """The files and folders directly in ``path`` (``EXP/RUN/artifacts/DIR``)."""

    def listing() -> Any:
        run_id, prefix = _where(request, path)
        prefix = prefix.rstrip("/")
        start = f"{prefix}/" if prefix else ""
        files: dict[str, dict[str, Any]] = {}
        for artifact in _store(request).get_run(run_id).artifacts:
            if not artifact.path.startswith(start) or (not prefix and artifact.path.startswith(f"{MODELS}/")):
                continue
            rest = artifact.path[len(start) :]
            head, _, tail = rest.partition("/")
            if tail:
                files.setdefault(head, {"path": head, "is_dir": True})
            else:
                files[head] = {"path": head, "is_dir": False, "file_size": artifact.size}
        return {"files": [files[name] for name in sorted(files)]}

    return _handle(listing)


@router.post(f"{PREFIX}/logged-models")
async def create_logged_model(request: Request) -> Any:
    """A model being logged (its files follow, under its artifact location)."""

    def create(body: dict[str, Any]) -> Any:
        run_id = str(body.get("source_run_id") or "")
        if not run_id:
            raise MlflowError("INVALID_PARAMETER_VALUE", "a logged model needs its source_run_id", 400)
        run = _store(request).get_run(run_id)
        model_id = f"m-{uuid.uuid4().hex}"
        now = int(time.time() * 1000)
        record = {
            "model_id": model_id,
            "experiment_id": str(body.get("experiment_id") or run.experiment_id),
            "name": str(body.get("name") or "model"),
            "creation_timestamp_ms": now,
            "last_updated_timestamp_ms": now,
            "artifact_uri": f"mlflow-artifacts:/{run.experiment_id}/models/{model_id}/artifacts",
            "status": "LOGGED_MODEL_PENDING",
            "model_type": str(body.get("model_type") or ""),
            "source_run_id": run_id,
            "tags": _pairs(body.get("tags"), "tag"),
        }
        _save_model(request, record)
        return _model(record)

    return await _posted(request, create)


@router.get(f"{PREFIX}/logged-models/{{model_id}}")
def get_logged_model(model_id: str, request: Request) -> Any:
    """A logged model's record."""
    return _handle(lambda: _model(_model_record(request, model_id)))


@router.patch(f"{PREFIX}/logged-models/{{model_id}}")
async def finalize_logged_model(model_id: str, request: Request) -> Any:
    """Set a logged model's status (READY once its files are up)."""

    def finalize(body: dict[str, Any]) -> Any:
        record = _model_record(request, model_id)
        record["status"] = str(body.get("status") or record["status"])
        _save_model(request, record)
        return _model(record)

    return await _posted(request, finalize)


@router.patch(f"{PREFIX}/logged-models/{{model_id}}/tags")
async def tag_logged_model(model_id: str, request: Request) -> Any:
    """Add tags to a logged model."""

    def tag(body: dict[str, Any]) -> Any:
        record = _model_record(request, model_id)
        record["tags"].update(_pairs(body.get("tags"), "tag"))
        _save_model(request, record)
        return {}

    return await _posted(request, tag)


@router.post(f"{PREFIX}/runs/outputs")
async def log_outputs(request: Request) -> Any:
    """Which models a run produced (kept as the run's tag ``mlflow.loggedModels``)."""

    def outputs(body: dict[str, Any]) -> Any:
        import json

        ids = [str(item.get("model_id")) for item in body.get("models") or [] if isinstance(item, dict)]
        _store(request).log_batch(_run_id(body), tags={"mlflow.loggedModels": json.dumps(ids)})
        return {}

    return await _posted(request, outputs)


def _registered_marker(request: Request, name: str) -> dict[str, Any] | None:
    import json

    try:
        found: dict[str, Any] = json.loads(_objects(request).get_named(f"mlflow/registered/{name}"))
    except NotFoundError:
        return None
    return found


def _version(found: Any) -> dict[str, Any]:
    return {
        "name": found.name,
        "version": str(found.version),
        "creation_timestamp": found.created_at,
        "last_updated_timestamp": found.created_at,
        "current_stage": "None",
        "description": found.description or "",
        "source": f"models:/{found.artifact_path.removeprefix(MODELS + '/')}",
        "run_id": found.run_id or "",
        "status": "READY",
        "run_link": "",
        "aliases": list(found.aliases),
    }


def _versions(registry: Any, name: str) -> list[Any]:
    """The versions of ``name`` (none when molen knows no such model yet)."""
    try:
        return list(registry.list_versions(name))
    except NotFoundError:
        return []


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}", name):
        raise MlflowError("INVALID_PARAMETER_VALUE", f"invalid registered model name {name!r}", 400)
    return name


@router.post(f"{PREFIX}/registered-models/create")
async def create_registered_model(request: Request) -> Any:
    """A registered model (400 RESOURCE_ALREADY_EXISTS when it exists: the client then adds a version)."""

    def create(body: dict[str, Any]) -> Any:
        import json

        name = _check_name(str(body.get("name") or ""))
        registry = _store(request).registry
        if _registered_marker(request, name) is not None or _versions(registry, name):
            raise MlflowError(
                "RESOURCE_ALREADY_EXISTS", f"Registered Model (name={name}) already exists.", 400
            )
        now = int(time.time() * 1000)
        record = {"name": name, "creation_timestamp": now, "description": str(body.get("description") or "")}
        _objects(request).put_named(f"mlflow/registered/{name}", json.dumps(record).encode())
        return {"registered_model": {**record, "last_updated_timestamp": now}}

    return await _posted(request, create)


@router.post(f"{PREFIX}/model-versions/create")
async def create_model_version(request: Request) -> Any:
    """The next version of a registered model, from a logged model (``source: models:/m-…``)."""

    def create(body: dict[str, Any]) -> Any:
        name = _check_name(str(body.get("name") or ""))
        model_id = str(body.get("model_id") or str(body.get("source") or "").removeprefix("models:/"))
        record = _model_record(request, model_id)
        prefix = f"{MODELS}/{model_id}/"
        run = _store(request).get_run(record["source_run_id"])
        mlmodel = next((a for a in run.artifacts if a.path == prefix + "MLmodel"), None)
        if mlmodel is None:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"logged model {model_id} has no MLmodel file", 400)
        found = _store(request).registry.create_version(
            name,
            run_id=run.id,
            artifact_path=f"{MODELS}/{model_id}",
            digest=mlmodel.digest,
            flavor="mlflow",
            user=run.user,
            description=str(body.get("description") or "") or None,
        )
        return {"model_version": _version(found)}

    return await _posted(request, create)


@router.get(f"{PREFIX}/registered-models/get")
def get_registered_model(request: Request, name: str = "") -> Any:
    """A registered model with its latest version."""

    def read() -> Any:
        registry = _store(request).registry
        versions = _versions(registry, name) if name else []
        marker = _registered_marker(request, name) if name else None
        if not versions and marker is None:
            raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"Registered Model with name={name} not found", 404)
        created = min([v.created_at for v in versions] + ([marker["creation_timestamp"]] if marker else []))
        latest = max(versions, key=lambda v: v.version) if versions else None
        aliases = [{"alias": a, "version": str(v.version)} for v in versions for a in v.aliases]
        return {
            "registered_model": {
                "name": name,
                "creation_timestamp": created,
                "last_updated_timestamp": max([v.created_at for v in versions] + [created]),
                "latest_versions": [_version(latest)] if latest else [],
                "aliases": aliases,
            }
        }

    return _handle(read)


@router.get(f"{PREFIX}/model-versions/get-download-uri")
def get_download_uri(request: Request, name: str = "", version: str = "") -> Any:
    """Where a version's files are (the logged model's artifact location)."""

    def read() -> Any:
        try:
            number = int(version)
        except ValueError:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"invalid model version {version!r}", 400) from None
        found = _store(request).registry.get_version(name, number)
        if found.flavor != "mlflow":
            raise MlflowError(
                "INVALID_PARAMETER_VALUE",
                f"{name}/{version} is a molen model: load it with molen.load_model",
                400,
            )
        model_id = found.artifact_path.removeprefix(f"{MODELS}/")
        return {"artifact_uri": _model_record(request, model_id)["artifact_uri"]}

    return _handle(read)


@router.get(f"{PREFIX}/model-versions/get")
def get_model_version(request: Request, name: str = "", version: str = "") -> Any:
    """One version of a registered model."""

    def read() -> Any:
        try:
            number = int(version)
        except ValueError:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"invalid model version {version!r}", 400) from None
        return {"model_version": _version(_store(request).registry.get_version(name, number))}

    return _handle(read)


@router.get(f"{PREFIX}/registered-models/alias")
def get_by_alias(request: Request, name: str = "", alias: str = "") -> Any:
    """The version an alias names."""

    def read() -> Any:
        registry = _store(request).registry
        number = registry.alias_version(name, alias)
        if number is None:
            raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"Registered model alias {alias} not found.", 404)
        return {"model_version": _version(registry.get_version(name, number))}

    return _handle(read)


@router.post(f"{PREFIX}/registered-models/alias")
async def set_alias(request: Request) -> Any:
    """Point an alias at a version (its move is kept in molen's alias history)."""

    def move(body: dict[str, Any]) -> Any:
        from molen.registry.service import check_alias

        name, alias = str(body.get("name") or ""), str(body.get("alias") or "")
        check_alias(alias)
        _store(request).registry.set_alias(name, alias, int(body.get("version") or 0), user="mlflow")
        return {}

    return await _posted(request, move)


# last, so every route above matches first
@router.api_route(
    f"{PREFIX}/{{rest:path}}", methods=["GET", "POST", "PATCH", "DELETE", "PUT"], include_in_schema=False
)
@router.api_route(
    "/api/3.0/mlflow/{rest:path}", methods=["GET", "POST", "PATCH", "DELETE", "PUT"], include_in_schema=False
)
async def not_served(request: Request, rest: str) -> Any:
    """An MLflow endpoint molen does not serve: MLflow's 404, which its client does not retry."""
    return error_response(
        MlflowError(
            "ENDPOINT_NOT_FOUND",
            f"molen server does not serve {request.method} {request.url.path} of MLflow's API",
            404,
        )
    )

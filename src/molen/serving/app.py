"""The REST interface of ``molen serve`` (FastAPI): routes parse, call the
:class:`~molen.serving.server.ModelServer`, and render; nothing else.

Bodies are read as bytes and parsed with orjson (no per-request pydantic models: the signature
is the schema, and checking it column-wise is most of the work); responses are orjson bytes.
Errors keep each protocol's shape: molen's ``{"error", "column"}``, MLflow's
``{"error_code", "message"}``, the V2 ``{"error"}``.
"""

from __future__ import annotations

import gc
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from molen.errors import InputSchemaError, MolenError
from molen.serving import protocols
from molen.serving.protocols import PayloadError

if TYPE_CHECKING:
    from molen.serving.server import ModelServer

__all__ = ["create_app"]

log = logging.getLogger("molen.serving")

JSON = "application/json"
MAX_BODY = 16 * 1024 * 1024


class _TooLarge(Exception):
    pass


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    import orjson

    body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _values(array: Any) -> Any:
    """An array as orjson takes it: numbers as the array itself (fast), anything else as a list."""
    return array if getattr(getattr(array, "dtype", None), "kind", "O") in "biuf" else list(array.tolist())


def _error(protocol: str, status: int, message: str, column: str | None = None) -> Response:
    if protocol == "mlflow":
        code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
        return _json({"error_code": code, "message": message}, status)
    if protocol == "v2":
        return _json({"error": message}, status)
    body: dict[str, Any] = {"error": message}
    if column is not None:
        body["column"] = column
    return _json(body, status)


def _status_of(exc: BaseException) -> tuple[int, str, str | None]:
    if isinstance(exc, _TooLarge):
        return 413, str(exc), None
    if isinstance(exc, InputSchemaError):
        return 422, exc.message, exc.column
    if isinstance(exc, MolenError):
        return exc.http_status, exc.message, None
    if isinstance(exc, (ValueError, TypeError, OverflowError)):  # the model refused values it got
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return 422, f"the model cannot score this input: {first}", None
    return 500, f"internal error: {type(exc).__name__}", None


async def _body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLarge(f"the request body is {int(length):,} bytes; the limit is {limit:,} (--max-body)")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"the request body exceeds the limit of {limit:,} bytes (--max-body)")
        chunks.append(chunk)
    return b"".join(chunks)


def _request_schema(server: ModelServer) -> dict[str, Any]:
    """The OpenAPI schema of a ``/predict`` body: the model's signature."""
    types = {
        "integer": {"type": "integer"},
        "float": {"type": "number"},
        "boolean": {"type": "boolean"},
        "datetime": {"type": "string", "format": "date-time"},
    }
    properties: dict[str, Any] = {}
    for spec in server.champion.current.signature.inputs:
        schema: dict[str, Any] = dict(types.get(spec.type, {"type": "string"}))
        if spec.categories is not None:
            schema["enum"] = list(spec.categories)
        if spec.nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        properties[spec.name] = schema
    row = {
        "type": "object",
        "properties": properties,
        "required": [spec.name for spec in server.champion.current.signature.inputs],
    }
    return {
        "oneOf": [
            {"type": "array", "items": row, "minItems": 1, "title": "rows"},
            {
                "type": "object",
                "title": "records",
                "properties": {"records": {"type": "array", "items": row, "minItems": 1}},
                "required": ["records"],
            },
            {
                "type": "object",
                "title": "columns",
                "properties": {
                    "columns": {
                        "type": "object",
                        "properties": {name: {"type": "array", "items": s} for name, s in properties.items()},
                    }
                },
                "required": ["columns"],
            },
        ]
    }


def create_app(
    server: ModelServer,
    *,
    token: str | None = None,
    max_body: int = MAX_BODY,
    poll_interval: float = 5.0,
) -> FastAPI:
    """The FastAPI app serving ``server``; it follows the registry every ``poll_interval`` s."""
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(poll_interval):
            server.refresh()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything loaded so far (libraries, the model) lives as long as the server: keep it out
        # of the garbage collector's full passes, which rows waiting for the log would otherwise
        # trigger again and again, each walking every object pandas and scikit-learn made.
        gc.collect()
        gc.freeze()
        watcher = threading.Thread(target=follow, name="molen-follow-registry", daemon=True)
        if poll_interval > 0:
            watcher.start()
        try:
            yield
        finally:
            stop.set()
            server.close()

    champion = server.champion
    app = FastAPI(
        title=f"molen serve {champion.uri}",
        description=(
            f"Predictions of the registered model **{champion.name}** (following `{champion.uri}`). "
            "Speaks molen's /predict, MLflow's /invocations and the Open Inference Protocol (V2)."
        ),
        version=champion.version,
        lifespan=lifespan,
    )
    app.state.server = server
    secret = token.encode() if token else None

    def authorized(request: Request) -> bool:
        if secret is None:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), secret)

    denied = {"WWW-Authenticate": "Bearer"}

    async def handle(
        request: Request, route: str, protocol: str, work: Callable[[bytes], Response]
    ) -> Response:
        if not authorized(request):
            response = _error(protocol, 401, "a bearer token is required (Authorization: Bearer …)")
            response.headers.update(denied)
            server.metrics.requests.labels(route, "401").inc()
            return response
        started = time.perf_counter()
        try:
            response = work(await _body(request, max_body))
        except Exception as exc:
            status, message, column = _status_of(exc)
            if status >= 500:
                log.exception("%s failed", route)
            response = _error(protocol, status, message, column)
        server.metrics.latency.labels(route).observe(time.perf_counter() - started)
        server.metrics.requests.labels(route, str(response.status_code)).inc()
        return response

    def headers(answer: Any) -> dict[str, str]:
        return {"X-Molen-Model": answer.model, "X-Molen-Model-Version": answer.version}

    # -- molen's own -------------------------------------------------------------------------------

    @app.post(
        "/predict",
        summary="Predict rows (molen's protocol)",
        openapi_extra={
            "requestBody": {"required": True, "content": {JSON: {"schema": _request_schema(server)}}}
        },
    )
    async def predict(request: Request) -> Response:
        def work(body: bytes) -> Response:
            data, ids = protocols.predict_input(protocols.parse_json(body))
            answer = server.answer(data, ids=ids, key=request.headers.get("x-molen-key"))
            doc: dict[str, Any] = {
                "model": answer.model,
                "version": answer.version,
                "request_id": answer.request_id,
                "ids": answer.ids,
                "predictions": _values(answer.predictions),
            }
            if answer.probabilities is not None:
                doc["probabilities"] = answer.probabilities
                doc["classes"] = answer.classes
            if answer.role != "champion":
                doc["role"] = answer.role
            return _json(doc, headers=headers(answer))

        return await handle(request, "/predict", "molen", work)

    @app.post(
        "/explain",
        summary="Why: per-row feature attributions (SHAP), same body as /predict",
        openapi_extra={
            "requestBody": {"required": True, "content": {JSON: {"schema": _request_schema(server)}}}
        },
    )
    async def explain(request: Request) -> Response:
        def work(body: bytes) -> Response:
            from molen.explain.shapley import explain as explain_rows

            data, _ = protocols.predict_input(protocols.parse_json(body))
            model = champion.current
            explanation = explain_rows(model, data)
            doc = {
                "model": champion.name,
                "version": str(model.version),
                "explainer": explanation.explainer,
                "output": explanation.output,
                "rows": explanation.rows(),
            }
            return _json(
                doc, headers={"X-Molen-Model": champion.name, "X-Molen-Model-Version": str(model.version)}
            )

        return await handle(request, "/explain", "molen", work)

    @app.post("/feedback", summary="Ground truth for earlier request ids")
    async def feedback(request: Request) -> Response:
        def work(body: bytes) -> Response:
            doc = protocols.parse_json(body)
            items = (
                doc
                if isinstance(doc, list)
                else doc.get("feedback", [doc])
                if isinstance(doc, dict)
                else None
            )
            if not isinstance(items, list):
                raise PayloadError('send {"request_id": ..., "truth": ...} or a list of them')
            return _json({"accepted": server.feedback(items)})

        return await handle(request, "/feedback", "molen", work)

    @app.get("/health", summary="Model name, version, alias, uptime")
    async def health() -> Response:
        return _json(server.health())

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        if server.log is not None:
            server.metrics.dropped.set(server.log.dropped)
            server.metrics.log_written.set(server.log.written)
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- MLflow's scoring protocol ------------------------------------------------------------------

    @app.post("/invocations", summary="Predict (MLflow's scoring protocol)")
    async def invocations(request: Request) -> Response:
        content_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()

        def work(body: bytes) -> Response:
            if content_type in {"text/csv", "application/csv"}:
                data = protocols.mlflow_csv(body)
            elif content_type == JSON:
                data = protocols.mlflow_input(protocols.parse_json(body), champion.current.signature.names)
            else:
                return _error(
                    "mlflow",
                    415,
                    f"unsupported content type {content_type!r}; send application/json or text/csv",
                )
            answer = server.answer(data, key=request.headers.get("x-molen-key"), probabilities=False)
            return _json({"predictions": _values(answer.predictions)}, headers=headers(answer))

        return await handle(request, "/invocations", "mlflow", work)

    @app.get("/ping", include_in_schema=False)
    async def ping() -> Response:
        return _json({"status": "ok"})

    @app.get("/version", include_in_schema=False)
    async def version() -> Response:
        from molen import __version__

        return Response(f"molen {__version__}", media_type="text/plain")

    # -- the Open Inference Protocol (KServe V2) ---------------------------------------------------------

    @app.get("/v2/health/live", summary="V2: the server is live")
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready", summary="V2: the model is loaded")
    async def ready() -> Response:
        return _json({"ready": True})

    @app.get("/v2", summary="V2: server metadata")
    async def v2_server() -> Response:
        from molen import __version__

        return _json({"name": "molen", "version": __version__, "extensions": ["explain"]})

    def known(name: str, version: str | None) -> str | None:
        if name != champion.name:
            return f"model {name} not found; this server serves {champion.name}"
        if version is not None and version != champion.version:
            return f"model {name} version {version} not found; this server serves version {champion.version}"
        return None

    def metadata(name: str, version: str | None) -> Response:
        missing = known(name, version)
        if missing:
            return _error("v2", 404, missing)
        model = champion.current
        datatypes = {"integer": "INT64", "float": "FP64", "boolean": "BOOL"}
        classes = model.classes or []
        if not classes:
            label = "FP64"
        elif all(isinstance(c, bool) for c in classes):
            label = "BOOL"
        elif all(isinstance(c, int) for c in classes):
            label = "INT64"
        else:
            label = "BYTES"
        outputs = [{"name": "predict", "datatype": label, "shape": [-1, 1]}]
        if model.has_proba:
            outputs.append(
                {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(model.classes or [])]}
            )
        return _json(
            {
                "name": champion.name,
                "versions": [champion.version],
                "platform": f"molen-{model.flavor}",
                "inputs": [
                    {"name": spec.name, "datatype": datatypes.get(spec.type, "BYTES"), "shape": [-1]}
                    for spec in model.signature.inputs
                ],
                "outputs": outputs,
            }
        )

    @app.get("/v2/models/{name}", summary="V2: model metadata")
    async def v2_model(name: str) -> Response:
        return metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}", summary="V2: model metadata")
    async def v2_model_version(name: str, version: str) -> Response:
        return metadata(name, version)

    @app.get("/v2/models/{name}/ready", summary="V2: the model is ready")
    async def v2_ready(name: str) -> Response:
        missing = known(name, None)
        return _error("v2", 404, missing) if missing else _json({"name": name, "ready": True})

    @app.get("/v2/models/{name}/versions/{version}/ready", summary="V2: the model version is ready")
    async def v2_version_ready(name: str, version: str) -> Response:
        missing = known(name, version)
        return _error("v2", 404, missing) if missing else _json({"name": name, "ready": True})

    async def infer(request: Request, name: str, version: str | None) -> Response:
        def work(body: bytes) -> Response:
            missing = known(name, version)
            if missing:
                return _error("v2", 404, missing)
            columns, request_id, wanted = protocols.v2_input(
                protocols.parse_json(body), champion.current.signature.names
            )
            answer = server.answer(columns, key=request.headers.get("x-molen-key"), request_id=request_id)
            doc = {
                "model_name": answer.model,
                "model_version": answer.version,
                "id": answer.request_id,
                "outputs": protocols.v2_outputs(answer.predictions, answer.probabilities, wanted),
            }
            return _json(doc, headers=headers(answer))

        return await handle(request, "/v2/infer", "v2", work)

    @app.post("/v2/models/{name}/infer", summary="V2: inference")
    async def v2_infer(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer", summary="V2: inference on a version")
    async def v2_infer_version(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    return app

"""``molen server``: one REST API in front of a team's metadata store and object store.

molen's own API is the store's interface over HTTP, so the Python API and the CLI work the same
against it (``MOLEN_TRACKING_URI=http://host:5000``; :mod:`molen.stores.metadata.http` and
:mod:`molen.stores.objects.http` are the clients):

* ``POST /api/molen/v1/store/{operation}`` and ``POST /api/molen/v1/registry/{operation}``: one
  operation per method of the metadata store and of the model registry (experiments, runs,
  params, metrics in batches, tags, artifacts, data inputs, searches, metric histories, model
  versions, aliases and their history, gate verdicts, lineage lookups). The body holds the
  keyword arguments as JSON (:mod:`molen.server.codec`), the answer the result. Each operation
  is listed, with its documentation, at ``/docs``.
* ``/api/molen/v1/objects/{key}``: the content-addressed object store, proxied. ``PUT`` of a
  loose object is refused unless its bytes hash to the key; keys are checked against the three
  forms the store uses, so no path can leave it.
* ``GET /health`` (answered before the stores are touched) and ``GET /api/molen/v1/info``.

Errors keep their meaning across the wire: a molen error becomes its HTTP status with
``{"error": CLASS, "message": LINE}``, and the client raises the same class. A store that is
down answers 503 with ``Retry-After``; no error body carries a stack trace or a server path.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Body, Request, Response  # at module level: FastAPI reads the annotations

from molen.errors import InvalidValueError, MolenError, NotFoundError, StoreError
from molen.server.auth import READ_OPERATIONS

if TYPE_CHECKING:
    from molen.stores.metadata.sql import SqlMetadataStore
    from molen.stores.objects.base import ObjectStore

__all__ = ["REGISTRY_OPERATIONS", "STORE_OPERATIONS", "create_app"]

log = logging.getLogger("molen.server")
API = "/api/molen/v1"
#: The metadata store's methods served (the rest are internal to it).
STORE_OPERATIONS = (
    "get_or_create_experiment",
    "get_experiment",
    "list_experiments",
    "create_run",
    "log_batch",
    "end_run",
    "set_lifecycle",
    "running_runs",
    "resolve_run_id",
    "get_run",
    "search_runs",
    "count_runs",
    "metric_history",
    "add_artifact",
    "add_data_input",
    "runs_using",
    "referenced_digests",
    "purge_run",
)
REGISTRY_OPERATIONS = (
    "create_version",
    "get_version",
    "latest_version",
    "list_versions",
    "versions_of_runs",
    "delete_version",
    "list_models",
    "alias_version",
    "set_alias",
    "rollback_alias",
    "alias_history",
    "add_verdict",
    "verdicts",
)
#: The object keys a store uses: a loose object, a pack, a named entry (the run cache).
_LOOSE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{62}")
_PACK = re.compile(r"packs/[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_NAMED = re.compile(r"named/(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}/){0,8}[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}")
#: Requests served at once per server process, each with its own database connection (so a
#: burst queues for a thread instead of timing out waiting for a connection).
THREADS = 16
#: The header that makes a write happen once however often it is sent (see exactly_once).
REQUEST_ID = "molen-request-id"
#: The largest request body accepted (an object upload), in bytes.
MAX_BODY = 2 * 1024**3
#: The largest JSON request (a batch of metrics, a search), in bytes.
MAX_JSON = 64 * 1024**2


def _key(key: str) -> str:
    known = _LOOSE.fullmatch(key) or _PACK.fullmatch(key) or _NAMED.fullmatch(key)
    if known and ".." not in key.split("/"):
        return key
    raise InvalidValueError("not an object key of this store")


class _Stores:
    """The stores, opened on first use (so ``/health`` answers at once)."""

    def __init__(self, store_url: str, objects_url: str, s3_endpoint_url: str | None) -> None:
        self.store_url, self.objects_url, self.s3_endpoint_url = store_url, objects_url, s3_endpoint_url
        self._metadata: SqlMetadataStore | None = None
        self._lock = threading.Lock()
        self._objects: ObjectStore | None = None

    @property
    def metadata(self) -> SqlMetadataStore:
        with self._lock:  # the first requests arrive together: one opens (and migrates) it
            if self._metadata is None:
                from molen.stores.metadata.sql import SqlMetadataStore

                if self.store_url.startswith(("http://", "https://")):
                    raise StoreError(
                        "molen server needs a database (sqlite:/// or postgresql://) as its --store"
                    )
                self._metadata = SqlMetadataStore(self.store_url, connections=THREADS)
            return self._metadata

    @property
    def objects(self) -> ObjectStore:
        if self._objects is None:
            from molen.stores.objects import open_object_store

            self._objects = open_object_store(self.objects_url, s3_endpoint_url=self.s3_endpoint_url)
        return self._objects


def _error(exc: MolenError) -> Any:
    from fastapi.responses import JSONResponse

    headers = {"Retry-After": "5"} if exc.http_status == 503 else None
    return JSONResponse(
        {"error": type(exc).__name__, "message": exc.message}, status_code=exc.http_status, headers=headers
    )


def create_app(
    store_url: str,
    objects_url: str,
    *,
    s3_endpoint_url: str | None = None,
    auth: bool = False,
    artifacts_direct: bool = False,
    ui: bool = True,
    project_root: str | None = None,
) -> Any:
    """The FastAPI app of ``molen server`` over the stores at ``store_url`` and ``objects_url``;
    with ``auth``, every request but health and the docs needs a token (:mod:`molen.server.auth`);
    with ``artifacts_direct``, ``/api/molen/v1/info`` tells clients where the object store is and
    they use it themselves (the proxy stays available); with ``ui``, the web UI at ``/ui/``
    (:mod:`molen.ui`), with the pages of the project at ``project_root`` (``molen ui``)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from molen import __version__
    from molen.server.codec import decode, encode
    from molen.stores.metadata.registry import SqlRegistry
    from molen.stores.metadata.sql import SqlMetadataStore

    if "://" not in objects_url:  # a folder: handed out to clients as an absolute path
        objects_url = str(Path(objects_url).resolve())
    stores = _Stores(store_url, objects_url, s3_endpoint_url)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="molen tracking server",
        version=__version__,
        description=__doc__,
        openapi_tags=[
            {"name": "store", "description": "experiments, runs, params, metrics, tags, artifacts, data"},
            {"name": "registry", "description": "model versions, aliases, gate verdicts"},
            {"name": "objects", "description": "the content-addressed object store, proxied"},
        ],
    )
    app.state.stores = stores

    @app.exception_handler(MolenError)
    async def molen_error(_request: Request, exc: MolenError) -> Any:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> Any:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = f"bad request: {first.get('msg', 'invalid')}" + (f" ({where})" if where else "")
        return JSONResponse({"error": "InvalidValueError", "message": message}, 400)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> Any:
        log.exception("molen server: unexpected error")
        return JSONResponse({"error": "ServerError", "message": "internal error (see the server's log)"}, 500)

    from molen.server.mlflow import router as mlflow_router

    app.include_router(mlflow_router)
    if ui:
        from molen.ui import mount

        app.state.project_root = Path(project_root) if project_root else None
        mount(app)

    @app.middleware("http")
    async def body_limit(request: Request, call_next: Any) -> Any:
        """Refuse a body larger than the route takes before reading it (413)."""
        size = request.headers.get("content-length")
        limit = MAX_BODY if "artifacts" in request.url.path or "/objects/" in request.url.path else MAX_JSON
        if size is not None and size.isdigit() and int(size) > limit:
            return JSONResponse(
                {
                    "error": "InvalidValueError",
                    "message": f"a request body holds at most {limit:,} bytes here",
                },
                status_code=413,
            )
        return await call_next(request)

    if auth:
        from molen.server.auth import Gate

        gate = Gate(lambda: stores.metadata.token_hashes())

        @app.middleware("http")
        async def tokens(request: Request, call_next: Any) -> Any:
            refused = gate.check(request.method, request.url.path, request.headers.get("authorization"))
            if refused is None:
                return await call_next(request)
            status, message = refused
            kind = "UsageError"
            if request.url.path.startswith("/api/2.0/"):  # MLflow's error shape
                code = "UNAUTHENTICATED" if status == 401 else "PERMISSION_DENIED"
                return JSONResponse({"error_code": code, "message": message}, status_code=status)
            return JSONResponse({"error": kind, "message": message}, status_code=status)

    @app.get("/health", tags=["server"])
    def health() -> dict[str, str]:
        """Up (it does not touch the stores, so probes never wait on them)."""
        return {"status": "ok", "version": __version__}

    @app.get(f"{API}/info", tags=["server"])
    def info() -> dict[str, Any]:
        """What this server is: molen's version, and where clients keep objects: ``proxied``
        (through ``/api/molen/v1/objects``) or ``direct`` (at ``objects_url``, with the
        client's own credentials)."""
        if not artifacts_direct:
            return {"version": __version__, "objects": "proxied"}
        from molen.config import mask_password

        return {
            "version": __version__,
            "objects": "direct",
            "objects_url": mask_password(objects_url),
            "s3_endpoint_url": s3_endpoint_url,
        }

    def operation(name: str, hints: dict[str, Any], target: Any) -> Any:
        def handler(request: Request, body: dict[str, Any] = Body(default={})) -> Any:
            unknown = sorted(set(body) - set(hints) - {"return"})
            if unknown:
                raise InvalidValueError(f"{name}: unknown argument {unknown[0]!r}")
            arguments = {key: decode(hints[key], value) for key, value in body.items()}

            def work() -> str:
                if name == "rollback_alias":  # the rule is the server's: the client's cannot travel
                    from molen.registry.service import rollback_on

                    found = rollback_on(
                        target(), arguments["name"], arguments["alias"], arguments.get("user")
                    )
                    return json.dumps({"result": encode(found)}, separators=(",", ":"))
                return json.dumps(
                    {"result": encode(getattr(target(), name)(**arguments))}, separators=(",", ":")
                )

            request_id = request.headers.get(REQUEST_ID)
            if request_id is None or name in READ_OPERATIONS:
                answer = work()
            else:
                answer = stores.metadata.exactly_once(request_id, work)
            return Response(answer, media_type="application/json")

        return handler

    def add_operations(group: str, names: tuple[str, ...], owner: type, target: Any) -> None:
        from molen.server.codec import method_hints

        for name in names:
            method = getattr(owner, name)
            route = app.post(
                f"{API}/{group}/{name}",
                tags=[group],
                summary=name,
                description=inspect.getdoc(method) or name,
                name=f"{group}.{name}",
            )
            route(operation(name, method_hints(method), target))

    add_operations("store", STORE_OPERATIONS, SqlMetadataStore, lambda: stores.metadata)
    add_operations("registry", REGISTRY_OPERATIONS, SqlRegistry, lambda: stores.metadata.registry)

    @app.head(f"{API}/objects/{{key:path}}", tags=["objects"])
    def object_exists(key: str) -> Response:
        """200 when the object is stored, 404 when not."""
        found = stores.objects._exists(_key(key))
        return Response(status_code=200 if found else 404)

    @app.get(f"{API}/objects/{{key:path}}", tags=["objects"])
    def read_object(key: str, request: Request) -> Response:
        """The object's bytes (a ``Range: bytes=A-B`` header reads a part)."""
        checked = _key(key)
        wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers.get("range", ""))
        try:
            if wanted:
                start, end = int(wanted.group(1)), int(wanted.group(2))
                data = stores.objects._read_range(checked, start, end - start + 1)
                return Response(data, status_code=206, media_type="application/octet-stream")
            return Response(stores.objects._read_bytes(checked), media_type="application/octet-stream")
        except FileNotFoundError:
            raise NotFoundError("no such object in this store") from None

    @app.put(f"{API}/objects/{{key:path}}", tags=["objects"])
    async def write_object(key: str, request: Request) -> dict[str, str]:
        """Store the body under ``key``; a loose object's bytes must hash to its key."""
        from molen.hashing import hash_file

        checked = _key(key)
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_BODY:
            raise InvalidValueError(f"an upload holds at most {MAX_BODY:,} bytes")
        handle, name = tempfile.mkstemp(prefix="molen-upload-")
        path = Path(name)
        try:
            written = 0
            with os.fdopen(handle, "wb") as sink:
                async for chunk in request.stream():
                    written += len(chunk)
                    if written > MAX_BODY:
                        raise InvalidValueError(f"an upload holds at most {MAX_BODY:,} bytes")
                    sink.write(chunk)
            if _LOOSE.fullmatch(checked):
                digest = checked.replace("/", "")
                if hash_file(path) != digest:
                    raise InvalidValueError("the bytes do not hash to the key they were sent to")
                stores.objects._write_file(checked, path, digest)
            else:
                stores.objects._write_named(checked, path)
        finally:
            path.unlink(missing_ok=True)
        return {}

    @app.delete(f"{API}/objects/{{key:path}}", tags=["objects"])
    def delete_object(key: str) -> dict[str, str]:
        """Remove the object (``molen gc``)."""
        stores.objects._delete(_key(key))
        return {}

    @app.get(f"{API}/objects", tags=["objects"])
    def list_objects(folder: str | None = None) -> dict[str, list[str]]:
        """The keys in ``folder`` (``packs``, ``named/runcache``), or every loose object's key."""
        if folder is None:
            return {"keys": list(stores.objects._keys())}
        if folder not in {"packs", "named"} and not _NAMED.fullmatch(folder):
            raise InvalidValueError("not a folder of this store")
        return {"keys": stores.objects._list(folder)}

    return app

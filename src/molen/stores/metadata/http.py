"""The metadata store behind ``molen server``: the same methods as
:class:`~molen.stores.metadata.sql.SqlMetadataStore`, each one HTTP call.

``MOLEN_TRACKING_URI=http://host:5000`` (or ``https://``) makes every molen command and the
Python API use this store, unchanged. Arguments and results travel as JSON
(:mod:`molen.server.codec`); a molen error on the server is raised here as the same class with
the same message. Connections are kept alive, one per thread. A server that cannot be reached,
or that answers 503 (its database is down), is retried with backoff for ``RETRY_SECONDS`` before
:class:`~molen.errors.StoreUnavailableError`. Writes are safe to retry: each call carries a
request id, and the server does a write once per id
(:meth:`~molen.stores.metadata.sql.SqlMetadataStore.exactly_once`), so a batch whose answer was
lost is not written twice.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from molen import errors
from molen.entities import (  # at run time: the codec reads the methods' type hints
    AliasEvent,
    Artifact,
    DataInput,
    Experiment,
    GateRecord,
    Metric,
    ModelVersion,
    RegisteredModel,
    RunRecord,
)
from molen.errors import MolenError, StoreUnavailableError
from molen.query import Filter, SortKey

#: (run id, host, pid, pid start time, last heartbeat), as SqlMetadataStore.running_runs gives.
RunningRun = tuple[str, str | None, int | None, float | None, int | None]

__all__ = ["HttpMetadataStore", "HttpRegistry", "HttpSession"]

API = "/api/molen/v1"
#: Metric values per log_batch request (a long outage's buffer is sent in bounded pieces).
BATCH = 20_000
#: How long a call keeps retrying an unreachable or unavailable server.
RETRY_SECONDS = 30.0


class HttpSession:
    """Keep-alive HTTP connections to one server (one per thread), JSON in and out."""

    def __init__(self, url: str, *, timeout: float = 120.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise errors.InvalidValueError(f"{url!r} is not a molen server URL; use http://host:5000")
        self.url = url.rstrip("/")
        self.scheme, self.host, self.port = parsed.scheme, parsed.hostname, parsed.port
        self.base = parsed.path.rstrip("/")
        self.timeout = timeout
        self.token = os.environ.get("MOLEN_TRACKING_TOKEN") or None
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        found: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if found is None:
            kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            found = kind(self.host, self.port, timeout=self.timeout)
            self._local.connection = found
        return found

    def _drop(self) -> None:
        found = getattr(self._local, "connection", None)
        if found is not None:
            found.close()
            self._local.connection = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request (retried while the server is unreachable or answers 503)."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        deadline = time.monotonic() + RETRY_SECONDS
        pause = 0.2
        while True:
            try:
                connection = self._connection()
                connection.request(method, self.base + path, body=body, headers=sent)
                answer = connection.getresponse()
                data = answer.read()
                if answer.status != 503 or time.monotonic() > deadline:
                    return answer.status, data, {k.lower(): v for k, v in answer.getheaders()}
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                if time.monotonic() > deadline:
                    raise StoreUnavailableError(
                        f"cannot reach the molen server at {self.url} ({exc}); check that it runs"
                    ) from None
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def call(self, group: str, operation: str, arguments: dict[str, Any]) -> Any:
        """``POST /api/molen/v1/GROUP/OPERATION`` with ``arguments``; the decoded ``result``."""
        from molen.server.codec import encode

        body = json.dumps({key: encode(value) for key, value in arguments.items()}).encode()
        # one id for every retry of this call: the server does a write once per id
        once = {"molen-request-id": uuid.uuid4().hex}
        status, data, _ = self.request("POST", f"{API}/{group}/{operation}", body, once)
        answer = _json(data)
        if status != 200:
            raise_error(status, answer, self.url)
        return answer.get("result")


def _json(data: bytes) -> dict[str, Any]:
    try:
        found = json.loads(data or b"{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def raise_error(status: int, answer: dict[str, Any], url: str) -> None:
    """Raise the molen error the server reported (the same class), or a store error."""
    kind = getattr(errors, str(answer.get("error", "")), None)
    message = str(answer.get("message") or f"the molen server at {url} answered HTTP {status}")
    if isinstance(kind, type) and issubclass(kind, MolenError):
        try:
            raise kind(message)
        except TypeError:  # an error class with more required arguments
            pass
    if status == 404:
        raise errors.NotFoundError(message)
    if status in {401, 403}:
        raise errors.UsageError(f"{message} (set MOLEN_TRACKING_TOKEN to a token of this server)")
    if 400 <= status < 500:
        raise errors.UsageError(message)
    raise errors.StoreError(message)


class _Remote:
    """Calls of one group of operations, the results decoded by the method's type hints."""

    group = "store"

    def __init__(self, session: HttpSession) -> None:
        self.session = session

    def _call(self, operation: str, **arguments: Any) -> Any:
        from molen.server.codec import decode, method_hints

        result = self.session.call(self.group, operation, arguments)
        return decode(method_hints(getattr(type(self), operation)).get("return"), result)


class HttpRegistry(_Remote):
    """The model registry behind a molen server (see :class:`SqlRegistry` for each method)."""

    group = "registry"

    def create_version(
        self,
        name: str,
        *,
        run_id: str | None,
        artifact_path: str,
        digest: str,
        flavor: str,
        user: str | None = None,
        description: str | None = None,
        number: int | None = None,
    ) -> ModelVersion:
        return self._call(  # type: ignore[no-any-return]
            "create_version",
            name=name,
            run_id=run_id,
            artifact_path=artifact_path,
            digest=digest,
            flavor=flavor,
            user=user,
            description=description,
            number=number,
        )

    def get_version(self, name: str, version: int) -> ModelVersion:
        return self._call("get_version", name=name, version=version)  # type: ignore[no-any-return]

    def latest_version(self, name: str) -> ModelVersion:
        return self._call("latest_version", name=name)  # type: ignore[no-any-return]

    def list_versions(self, name: str) -> list[ModelVersion]:
        return self._call("list_versions", name=name)  # type: ignore[no-any-return]

    def versions_of_runs(self, run_ids: list[str]) -> list[ModelVersion]:
        return self._call("versions_of_runs", run_ids=list(run_ids))  # type: ignore[no-any-return]

    def delete_version(self, name: str, version: int) -> None:
        self._call("delete_version", name=name, version=version)

    def list_models(self) -> list[RegisteredModel]:
        return self._call("list_models")  # type: ignore[no-any-return]

    def alias_version(self, name: str, alias: str) -> int | None:
        return self._call("alias_version", name=name, alias=alias)  # type: ignore[no-any-return]

    def set_alias(
        self, name: str, alias: str, version: int | None, *, user: str | None, action: str = "set"
    ) -> AliasEvent:
        return self._call(  # type: ignore[no-any-return]
            "set_alias", name=name, alias=alias, version=version, user=user, action=action
        )

    def rollback_alias(
        self, name: str, alias: str, target_of: Callable[[list[AliasEvent]], int], *, user: str | None
    ) -> AliasEvent:
        """The server applies its rollback rule (:func:`molen.registry.service.rollback_target`,
        the only one molen has); ``target_of`` cannot travel."""
        return self._call("rollback_alias", name=name, alias=alias, user=user)  # type: ignore[no-any-return]

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        return self._call("alias_history", name=name, alias=alias)  # type: ignore[no-any-return]

    def add_verdict(self, record: GateRecord) -> None:
        self._call("add_verdict", record=record)

    def verdicts(self, name: str, candidate: int | None = None) -> list[GateRecord]:
        return self._call("verdicts", name=name, candidate=candidate)  # type: ignore[no-any-return]


class HttpMetadataStore(_Remote):
    """The metadata store behind a molen server (see :class:`SqlMetadataStore` for each method)."""

    dialect = "http"

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(HttpSession(url))
        self._registry = HttpRegistry(self.session)

    @property
    def registry(self) -> HttpRegistry:
        """The model registry's part of this store."""
        return self._registry

    def close(self) -> None:
        """Nothing to release but this thread's connection."""
        self.session._drop()

    def get_or_create_experiment(self, name: str) -> Experiment:
        return self._call("get_or_create_experiment", name=name)  # type: ignore[no-any-return]

    def get_experiment(self, name: str) -> Experiment:
        return self._call("get_experiment", name=name)  # type: ignore[no-any-return]

    def list_experiments(self) -> list[Experiment]:
        return self._call("list_experiments")  # type: ignore[no-any-return]

    def create_run(
        self,
        *,
        run_id: str,
        experiment_id: int,
        name: str,
        start_time: int,
        parent_id: str | None = None,
        user: str | None = None,
        host: str | None = None,
        pid: int | None = None,
        pid_started: float | None = None,
        tags: dict[str, str] | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> None:
        self._call(
            "create_run",
            run_id=run_id,
            experiment_id=experiment_id,
            name=name,
            start_time=start_time,
            parent_id=parent_id,
            user=user,
            host=host,
            pid=pid,
            pid_started=pid_started,
            tags=tags,
            artifacts=list(artifacts),
        )

    def log_batch(
        self,
        run_id: str,
        *,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        metrics: Sequence[Metric] = (),
        heartbeat: int | None = None,
        end: tuple[str, int] | None = None,
    ) -> None:
        values = list(metrics)
        for start in range(0, max(len(values), 1), BATCH):  # bounded requests; params and end once
            self._call(
                "log_batch",
                run_id=run_id,
                params=params if start == 0 else None,
                tags=tags if start == 0 else None,
                metrics=values[start : start + BATCH],
                heartbeat=heartbeat,
                end=end if start + BATCH >= len(values) else None,
            )

    def end_run(self, run_id: str, status: str, end_time: int, *, only_if_running: bool = False) -> bool:
        return self._call(  # type: ignore[no-any-return]
            "end_run", run_id=run_id, status=status, end_time=end_time, only_if_running=only_if_running
        )

    def set_lifecycle(self, run_ids: Iterable[str], lifecycle: str) -> None:
        self._call("set_lifecycle", run_ids=list(run_ids), lifecycle=lifecycle)

    def running_runs(self) -> list[RunningRun]:
        return self._call("running_runs")  # type: ignore[no-any-return]

    def resolve_run_id(self, prefix: str) -> str:
        return self._call("resolve_run_id", prefix=prefix)  # type: ignore[no-any-return]

    def get_run(self, run_id: str) -> RunRecord:
        return self._call("get_run", run_id=run_id)  # type: ignore[no-any-return]

    def search_runs(
        self,
        *,
        where: Filter | None = None,
        experiment_ids: Sequence[int] | None = None,
        sort: Sequence[SortKey] = (),
        limit: int | None = None,
        offset: int = 0,
        deleted: bool = False,
    ) -> list[RunRecord]:
        return self._call(  # type: ignore[no-any-return]
            "search_runs",
            where=where,
            experiment_ids=None if experiment_ids is None else list(experiment_ids),
            sort=list(sort),
            limit=limit,
            offset=offset,
            deleted=deleted,
        )

    def count_runs(
        self,
        *,
        where: Filter | None = None,
        experiment_ids: Sequence[int] | None = None,
        deleted: bool = False,
    ) -> int:
        return self._call(  # type: ignore[no-any-return]
            "count_runs",
            where=where,
            experiment_ids=None if experiment_ids is None else list(experiment_ids),
            deleted=deleted,
        )

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        return self._call("metric_history", run_id=run_id, key=key)  # type: ignore[no-any-return]

    def add_artifact(self, run_id: str, artifact: Artifact) -> None:
        self._call("add_artifact", run_id=run_id, artifact=artifact)

    def add_data_input(self, run_id: str, data: DataInput) -> None:
        self._call("add_data_input", run_id=run_id, data=data)

    def runs_using(self, digest: str) -> list[str]:
        return self._call("runs_using", digest=digest)  # type: ignore[no-any-return]

    def referenced_digests(self) -> set[str]:
        return self._call("referenced_digests")  # type: ignore[no-any-return]

    def purge_run(self, run_id: str) -> None:
        self._call("purge_run", run_id=run_id)

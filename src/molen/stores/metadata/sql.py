"""The metadata store on SQL: SQLite (embedded default) and PostgreSQL (team setup).

One class for both: the differences (pragmas, upsert dialect, connection errors) are handled
here, so services never learn which database they talk to. Database-driver errors are
translated into :mod:`molen.errors` at this boundary.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as SqlTimeoutError

from molen.entities import Artifact, DataInput, Experiment, Metric, RunRecord, RunStatus
from molen.errors import (
    ConflictError,
    InvalidValueError,
    MissingDependencyError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)
from molen.query import Filter, SortKey
from molen.stores.metadata import schema as t
from molen.stores.metadata.migrate import ensure_schema
from molen.stores.metadata.search import (
    RunQuery,
    count_query,
    for_driver,
    grouped_query,
    records_of,
    runs_query,
)

if TYPE_CHECKING:
    from molen.stores.metadata.registry import SqlRegistry

__all__ = ["RunningRun", "SqlMetadataStore", "now_ms", "translated"]

F = TypeVar("F", bound=Callable[..., Any])
#: How long ``molen server`` remembers a request id (a client retries for minutes, not days).
REQUEST_MEMORY_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


class RunningRun(tuple[str, str | None, int | None, float | None, int | None]):
    """(run id, host, pid, pid start time, last heartbeat) of a run in state RUNNING."""


def translated(method: F) -> F:
    """Turn database-driver errors raised by ``method`` into molen errors."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        store: SqlMetadataStore = getattr(self, "store", self)  # the store, or a part of it
        try:
            return method(self, *args, **kwargs)
        except OperationalError as exc:
            raise store._operational(exc) from None
        except SqlTimeoutError:  # every pooled connection busy: retry later (503), not a server bug
            raise StoreUnavailableError(
                f"the metadata store {store.safe_url} is busy (no free connection); retry in a moment"
            ) from None
        except IntegrityError as exc:  # the caller's mistake, not the store's: never a 5xx
            detail = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
            if "foreign key" in detail.lower():
                raise NotFoundError(f"no such run or experiment in the metadata store ({detail})") from None
            raise ConflictError(f"the metadata store refused the write: {detail}") from None
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise store._unreachable() from None
            raise StoreError(
                f"the metadata store {store.safe_url} refused the request: "
                f"{str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__}"
            ) from None

    return cast(F, wrapper)


class SqlMetadataStore:
    """Experiments, runs, params, metrics, tags, artifacts and data versions in SQL."""

    def __init__(self, url: str, *, connections: int | None = None) -> None:
        """Open the store at ``url``; ``connections`` sizes a PostgreSQL pool (default 5 + 10
        overflow; ``molen server`` gives one per request thread)."""
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            raise UsageError(
                f"{_masked(url)!r} is not a database URL; use sqlite:///path/molen.db or "
                "postgresql+psycopg://user@host/db (setting tracking.uri)"
            ) from None
        self.url = url
        self.safe_url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in {"sqlite", "postgresql"}:
            raise UsageError(
                f"unsupported metadata store {self.safe_url}: use sqlite:/// or postgresql+psycopg://"
            )
        self.engine = self._create_engine(parsed, connections)
        self._experiments: dict[str, Experiment] = {}  # experiments are never renamed
        self._stmt = _Statements(self._insert)
        self._registry: SqlRegistry | None = None
        self._held = threading.local()  # the transaction of exactly_once, per thread
        self._requests_done = 0
        try:
            ensure_schema(self.engine, url_for_errors=self.safe_url)
        except OperationalError as exc:
            raise self._operational(exc) from None
        except DBAPIError:
            raise self._unreachable() from None

    # -- engine and errors --------------------------------------------------------------------

    def _create_engine(self, parsed: Any, connections: int | None) -> Engine:
        try:
            if self.dialect == "sqlite":
                database = parsed.database
                if database and database != ":memory:":
                    from pathlib import Path

                    Path(database).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(parsed, connect_args={"timeout": 30})
                _configure_sqlite(engine)
                return engine
            return create_engine(
                parsed,
                pool_pre_ping=True,
                pool_size=connections or 5,
                max_overflow=0 if connections else 10,
                connect_args={"connect_timeout": 10},
            )
        except (ModuleNotFoundError, NoSuchModuleError):
            raise MissingDependencyError(
                f"the metadata store {self.safe_url} needs the PostgreSQL driver: "
                "pip install 'molen[postgres]'"
            ) from None

    def _unreachable(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"cannot reach the metadata store {self.safe_url}; check that the server runs and "
            "the URL (setting tracking.uri) is right"
        )

    def _operational(self, exc: OperationalError) -> StoreError:
        message = str(exc.orig).lower() if exc.orig is not None else ""
        if "locked" in message or "busy" in message:
            return StoreError(
                f"the metadata store {self.safe_url} is locked by another process; "
                "retry, or look for a stuck molen process"
            )
        if "unable to open" in message or "readonly" in message or "read-only" in message:
            return StoreError(
                f"cannot write the metadata store {self.safe_url}; check the folder's permissions"
            )
        if "disk" in message and "full" in message:
            return StoreError(f"the disk holding {self.safe_url} is full; free space and retry")
        return self._unreachable()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection to read with (inside :meth:`exactly_once`, its transaction, so the
        request's own writes are seen)."""
        held: Connection | None = getattr(self._held, "connection", None)
        if held is not None:
            yield held
            return
        with self.engine.connect() as connection:
            yield connection

    @contextlib.contextmanager
    def _write(self, *, savepoint: bool = False) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite, so writers queue, never deadlock).

        Inside :meth:`exactly_once`, its transaction: an error rolls all of it back. A caller
        that catches an error of its own writes and goes on asks for a ``savepoint``, which
        undoes only those."""
        held: Connection | None = getattr(self._held, "connection", None)
        if held is not None:
            if not savepoint:
                yield held
                return
            with held.begin_nested():
                yield held
            return
        with self._read() as connection:
            connection.execution_options(molen_write=True)
            with connection.begin():
                yield connection

    def _insert(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    @property
    def registry(self) -> SqlRegistry:
        """The model registry's part of this store."""
        from molen.stores.metadata.registry import SqlRegistry

        if self._registry is None:
            self._registry = SqlRegistry(self)
        return self._registry

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    # -- experiments ---------------------------------------------------------------------------

    @translated
    def get_or_create_experiment(self, name: str) -> Experiment:
        """The experiment called ``name``, created if it does not exist yet."""
        found = self._experiments.get(name) or self._experiment_by_name(name)
        if found is not None:
            self._experiments[name] = found
            return found
        try:
            with self._write(savepoint=True) as connection:
                connection.execute(insert(t.experiments).values(name=name, created_at=now_ms()))
        except IntegrityError:
            pass  # created by a concurrent writer a moment ago
        found = self._experiment_by_name(name)
        if found is None:  # pragma: no cover - would be a database bug
            raise StoreError(f"experiment {name!r} vanished right after it was created")
        return found

    def _experiment_by_name(self, name: str) -> Experiment | None:
        with self._read() as connection:
            row = connection.execute(select(t.experiments).where(t.experiments.c.name == name)).first()
        return None if row is None else Experiment(row.id, row.name, row.created_at, row.lifecycle)

    @translated
    def get_experiment(self, name: str) -> Experiment:
        """The experiment called ``name``; :class:`NotFoundError` if there is none."""
        found = self._experiment_by_name(name)
        if found is None:
            raise NotFoundError(f"no experiment named {name!r}; `molen experiments list` shows them")
        return found

    @translated
    def list_experiments(self) -> list[Experiment]:
        """Every experiment with its number of (not deleted) runs, oldest first."""
        counts = (
            select(t.runs.c.experiment_id, func.count().label("n"))
            .where(t.runs.c.lifecycle == "active")
            .group_by(t.runs.c.experiment_id)
            .subquery()
        )
        query = (
            select(t.experiments, func.coalesce(counts.c.n, 0).label("n"))
            .outerjoin(counts, counts.c.experiment_id == t.experiments.c.id)
            .order_by(t.experiments.c.id)
        )
        with self._read() as connection:
            return [
                Experiment(row.id, row.name, row.created_at, row.lifecycle, row.n)
                for row in connection.execute(query)
            ]

    # -- runs ----------------------------------------------------------------------------------

    @translated
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
        """Record a new RUNNING run, its first tags and artifacts in one transaction."""
        with self._write() as connection:
            self._stmt.run(
                connection,
                self._stmt.insert_run,
                {
                    "id": run_id,
                    "experiment_id": experiment_id,
                    "name": name,
                    "status": RunStatus.RUNNING,
                    "start_time": start_time,
                    "end_time": None,
                    "parent_id": parent_id,
                    "lifecycle": "active",
                    "user": user,
                    "host": host,
                    "pid": pid,
                    "pid_started": pid_started,
                    "heartbeat": start_time,
                },
            )
            if tags:
                self._stmt.run(
                    connection,
                    self._stmt.insert_tags,
                    [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()],
                )
            if artifacts:
                self._stmt.run(
                    connection,
                    self._stmt.insert_artifacts,
                    [
                        {"run_id": run_id, "path": a.path, "digest": a.digest, "size": a.size}
                        for a in artifacts
                    ],
                )

    @translated
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
        """Write params, tags and metrics of one run in a single transaction.

        ``end`` = (status, end time) also ends the run in the same transaction.

        A param may be logged again with the same value; a different value raises
        :class:`ConflictError` (params describe how a run was made and never change).
        """
        with self._write() as connection:
            if params:
                self._insert_params(connection, run_id, params)
            if tags:
                self._stmt.run(
                    connection,
                    self._stmt.upsert_tags,
                    [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()],
                )
            if metrics:
                self._insert_metrics(connection, run_id, metrics)
            if end is not None:
                self._stmt.run(
                    connection,
                    self._stmt.end_run,
                    {"rid": run_id, "status": end[0], "end_time": end[1], "heartbeat": end[1]},
                )
            elif heartbeat is not None:
                self._stmt.run(connection, self._stmt.beat, {"rid": run_id, "heartbeat": heartbeat})

    def _insert_params(self, connection: Connection, run_id: str, values: dict[str, str]) -> None:
        rows = [{"run_id": run_id, "key": k, "value": v} for k, v in values.items()]
        inserted = self._stmt.run(connection, self._stmt.insert_params_new, rows)
        if inserted == len(rows):
            return  # the common case: all new
        existing = dict(
            connection.execute(
                select(t.params.c.key, t.params.c.value).where(
                    t.params.c.run_id == run_id, t.params.c.key.in_(list(values))
                )
            ).all()
        )
        for key, old in existing.items():
            if old != values[key]:
                raise ConflictError(
                    f"param {key!r} of run {run_id[:8]} is already {old!r}, cannot change it to "
                    f"{values[key]!r}; params are immutable: start a new run, or use a tag"
                )

    def _insert_metrics(self, connection: Connection, run_id: str, batch: Sequence[Metric]) -> None:
        rows = [(run_id, m.key, m.step, m.timestamp, None if math.isnan(m.value) else m.value) for m in batch]
        table = "metrics"
        sql = f'INSERT INTO {table} (run_id, "key", step, "timestamp", value) VALUES '
        # the fixed statement is executed with bound rows through the driver's executemany,
        # the fastest bulk path both drivers have; no user text is part of the SQL
        marker = "(?, ?, ?, ?, ?)" if self.dialect == "sqlite" else "(%s, %s, %s, %s, %s)"
        connection.exec_driver_sql(sql + marker, rows)
        latest: dict[str, Metric] = {}
        for metric in batch:
            held = latest.get(metric.key)
            if held is None or (metric.step, metric.timestamp) >= (held.step, held.timestamp):
                latest[metric.key] = metric
        self._stmt.run(
            connection,
            self._stmt.upsert_latest,
            [
                {
                    "run_id": run_id,
                    "key": m.key,
                    "step": m.step,
                    "timestamp": m.timestamp,
                    "value": None if math.isnan(m.value) else m.value,
                }
                for m in latest.values()
            ],
        )

    @translated
    def end_run(self, run_id: str, status: str, end_time: int, *, only_if_running: bool = False) -> bool:
        """Set the final status of a run; returns whether a row changed."""
        query = update(t.runs).where(t.runs.c.id == run_id)
        if only_if_running:
            query = query.where(t.runs.c.status == RunStatus.RUNNING)
        with self._write() as connection:
            result = connection.execute(query.values(status=status, end_time=end_time))
        return bool(result.rowcount)

    @translated
    def set_lifecycle(self, run_ids: Iterable[str], lifecycle: str) -> None:
        """Mark runs ``deleted`` (hidden, restorable) or ``active`` again."""
        with self._write() as connection:
            connection.execute(
                update(t.runs).where(t.runs.c.id.in_(list(run_ids))).values(lifecycle=lifecycle)
            )

    @translated
    def running_runs(self) -> list[RunningRun]:
        """Every run still marked RUNNING, with what is needed to tell if it is alive."""
        query = select(
            t.runs.c.id, t.runs.c.host, t.runs.c.pid, t.runs.c.pid_started, t.runs.c.heartbeat
        ).where(t.runs.c.status == RunStatus.RUNNING)
        with self._read() as connection:
            return [RunningRun(tuple(row)) for row in connection.execute(query)]

    @translated
    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the run whose id starts with ``prefix`` (as git resolves commits)."""
        cleaned = prefix.strip().lower()
        if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
            raise InvalidValueError(f"{prefix!r} is not a run id (hexadecimal, any unique prefix)")
        query = select(t.runs.c.id).where(t.runs.c.id.like(cleaned + "%")).limit(6)
        with self._read() as connection:
            found = [row[0] for row in connection.execute(query)]
        if not found:
            raise NotFoundError(f"no run with an id starting {prefix!r}; `molen runs list` shows them")
        if len(found) > 1:
            from molen.errors import AmbiguousIdError

            shown = ", ".join(run_id[:12] for run_id in found[:5])
            raise AmbiguousIdError(
                f"run id prefix {prefix!r} matches several runs ({shown}); give more characters"
            )
        return str(found[0])

    @translated
    def get_run(self, run_id: str) -> RunRecord:
        """The whole record of run ``run_id`` (a full id)."""
        records = self._records(runs_query(run_id=run_id), full=True)
        if not records:
            raise NotFoundError(f"no run with id {run_id}")
        return records[0]

    @translated
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
        """Runs matching ``where``, sorted by ``sort`` then newest first."""
        if limit is not None and len(sort) == 1 and sort[0].field.kind == "metrics":
            return self._by_metric(where, sort[0], experiment_ids, limit, offset, deleted)
        query = runs_query(
            where, experiment_ids=experiment_ids, sort=sort, limit=limit, offset=offset, deleted=deleted
        )
        return self._records(query, full=False)

    def _by_metric(
        self,
        where: Filter | None,
        sort: SortKey,
        experiment_ids: Sequence[int] | None,
        limit: int,
        offset: int,
        deleted: bool,
    ) -> list[RunRecord]:
        """A page of runs sorted by one metric, read in the order of the ``(key, value)``
        index (a page costs its own rows, not a sort of every run); the runs without the
        metric follow, as :func:`runs_query` orders them."""
        from molen.stores.metadata.search import by_metric_queries

        with_value, counted, without, first, second = by_metric_queries(
            where, sort, experiment_ids=experiment_ids, deleted=deleted
        )
        with self._read() as connection:
            style = connection.dialect.paramstyle
            rows = list(connection.exec_driver_sql(for_driver(with_value, style), (*first, limit, offset)))
            if len(rows) < limit:
                have = int(connection.exec_driver_sql(for_driver(counted, style), tuple(first)).scalar_one())
                rest = (*second, limit - len(rows), max(0, offset - have))
                rows += list(connection.exec_driver_sql(for_driver(without, style), rest))
            return self._grouped_records(connection, rows, full=False)

    @translated
    def count_runs(
        self,
        *,
        where: Filter | None = None,
        experiment_ids: Sequence[int] | None = None,
        deleted: bool = False,
    ) -> int:
        """How many runs :meth:`search_runs` would return without a limit."""
        query = count_query(where, experiment_ids=experiment_ids, deleted=deleted)
        with self._read() as connection:
            sql = for_driver(query.sql, connection.dialect.paramstyle)
            return int(connection.exec_driver_sql(sql, query.params).scalar_one())

    def _records(self, query: RunQuery, *, full: bool) -> list[RunRecord]:
        with self._read() as connection:
            sql = for_driver(query.sql, connection.dialect.paramstyle)
            rows = connection.exec_driver_sql(sql, query.params).fetchall()
            return self._grouped_records(connection, rows, full=full)

    def _grouped_records(self, connection: Connection, rows: Sequence[Any], *, full: bool) -> list[RunRecord]:
        ids = [row[0] for row in rows]
        params = _grouped(connection, t.params, ids)
        tags = _grouped(connection, t.tags, ids)
        metrics = _grouped(connection, t.latest_metrics, ids)
        inputs = self._inputs(connection, ids) if full else {}
        artifacts = self._artifacts(connection, ids) if full else {}
        return records_of(rows, params, tags, metrics, inputs, artifacts)

    def _inputs(self, connection: Connection, ids: list[str]) -> dict[str, list[DataInput]]:
        query = (
            select(
                t.run_inputs,
                t.data_versions.c.kind,
                t.data_versions.c.size,
                t.data_versions.c.file_count,
            )
            .join(t.data_versions, t.data_versions.c.digest == t.run_inputs.c.digest)
            .where(t.run_inputs.c.run_id.in_(ids))
            .order_by(t.run_inputs.c.role, t.run_inputs.c.path)
        )
        found: dict[str, list[DataInput]] = {}
        for row in connection.execute(query):
            found.setdefault(row.run_id, []).append(
                DataInput(row.path, row.digest, row.role, row.kind, row.size, row.file_count)
            )
        return found

    def _artifacts(self, connection: Connection, ids: list[str]) -> dict[str, list[Artifact]]:
        query = select(t.artifacts).where(t.artifacts.c.run_id.in_(ids)).order_by(t.artifacts.c.path)
        found: dict[str, list[Artifact]] = {}
        for row in connection.execute(query):
            found.setdefault(row.run_id, []).append(Artifact(row.path, row.digest, row.size))
        return found

    @translated
    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every value of metric ``key`` of run ``run_id``, by step then time."""
        query = (
            select(t.metrics.c.key, t.metrics.c.value, t.metrics.c.step, t.metrics.c.timestamp)
            .where(t.metrics.c.run_id == run_id, t.metrics.c.key == key)
            .order_by(t.metrics.c.step, t.metrics.c.timestamp)
        )
        with self._read() as connection:
            return [
                Metric(row.key, math.nan if row.value is None else row.value, row.step, row.timestamp)
                for row in connection.execute(query)
            ]

    @translated
    def metric_histories(self, run_id: str, keys: Sequence[str]) -> dict[str, list[Metric]]:
        """Every value of each metric in ``keys`` of run ``run_id`` (one query), by step."""
        query = (
            select(t.metrics.c.key, t.metrics.c.value, t.metrics.c.step, t.metrics.c.timestamp)
            .where(t.metrics.c.run_id == run_id, t.metrics.c.key.in_(list(keys)))
            .order_by(t.metrics.c.key, t.metrics.c.step, t.metrics.c.timestamp)
        )
        found: dict[str, list[Metric]] = {key: [] for key in keys}
        with self._read() as connection:
            for row in connection.execute(query):
                found[row.key].append(
                    Metric(row.key, math.nan if row.value is None else row.value, row.step, row.timestamp)
                )
        return found

    @translated
    def inputs_of(self, run_ids: Sequence[str]) -> dict[str, list[DataInput]]:
        """The data inputs of each of ``run_ids`` (a page of runs in one query)."""
        if not run_ids:
            return {}
        with self._read() as connection:
            return self._inputs(connection, list(run_ids))

    @translated
    def column_names(self) -> dict[str, list[str]]:
        """Every param and metric name in the store (of any run): a skip scan of each table's
        index on ``key``, one index seek per name, so as fast at 10,000 runs as at ten."""
        names: dict[str, list[str]] = {}
        with self._read() as connection:
            for label, table in (("params", "params"), ("metrics", "latest_metrics")):
                sql = (
                    f'WITH RECURSIVE names(name) AS (SELECT min("key") FROM {table} '
                    f'UNION ALL SELECT (SELECT min("key") FROM {table} WHERE "key" > names.name) '
                    "FROM names WHERE names.name IS NOT NULL) "
                    "SELECT name FROM names WHERE name IS NOT NULL"
                )
                names[label] = [row[0] for row in connection.exec_driver_sql(sql)]
        return names

    # -- artifacts and data versions -----------------------------------------------------------

    @translated
    def add_artifact(self, run_id: str, artifact: Artifact) -> None:
        """Attach ``artifact`` to a run; logging the same path again replaces it."""
        stmt = self._insert(t.artifacts)
        with self._write() as connection:
            connection.execute(
                stmt.on_conflict_do_update(
                    index_elements=["run_id", "path"],
                    set_={"digest": stmt.excluded.digest, "size": stmt.excluded.size},
                ),
                {
                    "run_id": run_id,
                    "path": artifact.path,
                    "digest": artifact.digest,
                    "size": artifact.size,
                },
            )

    @translated
    def add_data_input(self, run_id: str, data: DataInput) -> None:
        """Record the data version ``data`` (once) and link it to a run."""
        versions = self._insert(t.data_versions)
        links = self._insert(t.run_inputs)
        with self._write() as connection:
            connection.execute(
                versions.on_conflict_do_nothing(index_elements=["digest"]),
                {
                    "digest": data.digest,
                    "kind": data.kind,
                    "size": data.size,
                    "file_count": data.file_count,
                    "created_at": now_ms(),
                },
            )
            connection.execute(
                links.on_conflict_do_nothing(),
                {"run_id": run_id, "digest": data.digest, "path": data.path, "role": data.role},
            )

    @translated
    def runs_using(self, digest: str) -> list[str]:
        """Ids of the runs that read or wrote data version ``digest``."""
        query = select(t.run_inputs.c.run_id).where(t.run_inputs.c.digest == digest).distinct()
        with self._read() as connection:
            return [row[0] for row in connection.execute(query)]

    # -- requests of `molen server` done once ------------------------------------------------

    @translated
    def exactly_once(self, request_id: str, work: Callable[[], str]) -> str:
        """Do the write ``work`` (which answers a JSON text) once for ``request_id``.

        The request id, the writes and the answer commit in one transaction: a client that
        lost the answer (a timeout, a dropped connection) and sends the request again gets the
        first answer back, and nothing is written twice. Two copies in flight at once are
        serialized by the id's primary key: the second waits for the first, then answers
        what it answered. Ids are forgotten after :data:`REQUEST_MEMORY_MS`.
        """
        if not 8 <= len(request_id) <= 64:
            raise InvalidValueError("a request id has 8 to 64 characters")
        with self._write() as connection:
            now = now_ms()
            claimed = connection.execute(
                self._insert(t.requests)
                .values(id=request_id, created_at=now, answer=None)
                .on_conflict_do_nothing()
                .returning(t.requests.c.id)
            )
            if claimed.first() is None:  # done before (or just now, by a copy we waited for)
                done = connection.execute(select(t.requests.c.answer).where(t.requests.c.id == request_id))
                return str(done.scalar() or "null")
            self._held.connection = connection
            try:
                answer = work()
            finally:
                self._held.connection = None
            connection.execute(update(t.requests).where(t.requests.c.id == request_id).values(answer=answer))
            self._requests_done += 1
            if self._requests_done % 1000 == 1:
                forgotten = now - REQUEST_MEMORY_MS
                connection.execute(delete(t.requests).where(t.requests.c.created_at < forgotten))
        return answer

    # -- access tokens of `molen server --auth` (only the server's side uses these) ------------

    @translated
    def create_token(self, name: str, role: str, digest: str) -> None:
        """Record token ``name`` with ``role`` and the SHA-256 ``digest`` of its secret;
        :class:`ConflictError` if the name is taken."""
        try:
            with self._write() as connection:
                connection.execute(
                    insert(t.tokens).values(name=name, role=role, hash=digest, created_at=now_ms())
                )
        except IntegrityError:
            raise ConflictError(
                f"a token named {name!r} exists; delete it first or pick another name"
            ) from None

    @translated
    def token_hashes(self) -> list[tuple[str, str, str]]:
        """(name, role, SHA-256 of the secret) of every token, for the server to compare."""
        with self._read() as connection:
            rows = connection.execute(select(t.tokens.c.name, t.tokens.c.role, t.tokens.c.hash))
            return [(row.name, row.role, row.hash) for row in rows]

    @translated
    def list_tokens(self) -> list[tuple[str, str, int]]:
        """(name, role, created at) of every token."""
        with self._read() as connection:
            rows = connection.execute(
                select(t.tokens.c.name, t.tokens.c.role, t.tokens.c.created_at).order_by(t.tokens.c.name)
            )
            return [(row.name, row.role, row.created_at) for row in rows]

    @translated
    def delete_token(self, name: str) -> None:
        """Remove token ``name``; :class:`NotFoundError` if there is none."""
        with self._write() as connection:
            gone = connection.execute(t.tokens.delete().where(t.tokens.c.name == name)).rowcount
        if not gone:
            raise NotFoundError(f"no token named {name!r}; `molen tokens list` shows them")

    @translated
    def referenced_digests(self) -> set[str]:
        """Every object digest a run refers to (artifacts and data versions)."""
        with self._read() as connection:
            found = {row[0] for row in connection.execute(select(t.artifacts.c.digest))}
            found |= {row[0] for row in connection.execute(select(t.run_inputs.c.digest))}
        return found

    @translated
    def purge_run(self, run_id: str) -> None:
        """Delete a run and everything recorded for it, for good (refused while a registered
        model version came from it)."""
        with self._write() as connection:
            produced = connection.execute(
                select(t.model_versions.c.name, t.model_versions.c.version).where(
                    t.model_versions.c.run_id == run_id
                )
            ).first()
            if produced is not None:
                raise ConflictError(
                    f"run {run_id} produced {produced[0]}/{produced[1]}; delete that model version first"
                )
            for table in (t.metrics, t.latest_metrics, t.params, t.tags, t.artifacts, t.run_inputs):
                connection.execute(delete(table).where(table.c.run_id == run_id))
            connection.execute(update(t.runs).where(t.runs.c.parent_id == run_id).values(parent_id=None))
            connection.execute(delete(t.runs).where(t.runs.c.id == run_id))


class _Statements:
    """The hot write statements, built once per store and compiled once per set of columns;
    :meth:`run` hands the compiled SQL and the rows straight to the driver (SQLAlchemy's
    per-execution machinery was most of the cost of recording a run)."""

    def run(self, connection: Connection, statement: Any, rows: list[dict[str, Any]] | dict[str, Any]) -> int:
        """Execute ``statement`` with ``rows`` (one dict, or many for executemany); the row count."""
        many = rows if isinstance(rows, list) else [rows]
        if not many:
            return 0
        dialect = connection.dialect
        key = (id(statement), tuple(many[0]))
        compiled = self._compiled.get(key)
        if compiled is None:
            form = statement.compile(dialect=dialect, column_keys=list(many[0]))
            names = list(form.positiontup) if form.positional else None
            compiled = self._compiled[key] = (form.string, names)
        sql, names = compiled
        values = [tuple(row[name] for name in names) for row in many] if names is not None else many
        # straight on the driver's cursor, inside the transaction SQLAlchemy began; a driver
        # error becomes SQLAlchemy's error for it, as if SQLAlchemy had run the statement
        cursor = connection.connection.cursor()
        try:
            if len(values) > 1:
                cursor.executemany(sql, values)
            else:
                cursor.execute(sql, values[0])
            return int(cursor.rowcount)
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, values, exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
        finally:
            cursor.close()

    def __init__(self, dialect_insert: Callable[[Any], Any]) -> None:
        self._compiled: dict[tuple[int, tuple[str, ...]], tuple[str, list[str] | None]] = {}
        self.insert_run = insert(t.runs)
        self.insert_tags = insert(t.tags)
        self.insert_artifacts = insert(t.artifacts)
        tags = dialect_insert(t.tags)
        self.upsert_tags = tags.on_conflict_do_update(
            index_elements=["run_id", "key"], set_={"value": tags.excluded.value}
        )
        self.insert_params_new = dialect_insert(t.params).on_conflict_do_nothing(
            index_elements=["run_id", "key"]
        )
        latest = dialect_insert(t.latest_metrics)
        newer = (latest.excluded.step > t.latest_metrics.c.step) | (
            (latest.excluded.step == t.latest_metrics.c.step)
            & (latest.excluded.timestamp >= t.latest_metrics.c.timestamp)
        )
        self.upsert_latest = latest.on_conflict_do_update(
            index_elements=["run_id", "key"],
            set_={
                "step": latest.excluded.step,
                "timestamp": latest.excluded.timestamp,
                "value": latest.excluded.value,
            },
            where=newer,
        )
        by_id = t.runs.c.id == bindparam("rid")
        self.end_run = (
            update(t.runs)
            .where(by_id)
            .values(
                status=bindparam("status"), end_time=bindparam("end_time"), heartbeat=bindparam("heartbeat")
            )
        )
        self.beat = update(t.runs).where(by_id).values(heartbeat=bindparam("heartbeat"))


def _masked(url: str) -> str:
    """``url`` with any password replaced by ``***``, for error messages."""
    from molen.config import mask_password

    return mask_password(url)


def _grouped(connection: Connection, table: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    if not ids:
        return found
    # The hottest read: a fixed statement over molen's own table, run ids bound as parameters,
    # fetched in one driver call (SQLAlchemy's per-row result processing doubled its cost).
    for chunk in range(0, len(ids), 900):
        part = ids[chunk : chunk + 900]
        sql = for_driver(grouped_query(table.name, len(part)), connection.dialect.paramstyle)
        for run_id, key, value in connection.exec_driver_sql(sql, tuple(part)).fetchall():
            found.setdefault(run_id, {})[key] = value
    return found


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, foreign keys, and explicit BEGIN so writers queue instead of failing."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # molen emits BEGIN itself, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        deadline = time.monotonic() + 30
        while True:  # a new file switched to WAL by two processes at once: "locked", no busy wait
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        cursor.execute("PRAGMA synchronous=NORMAL")
        # reads of a big store (the UI sorting ten thousand runs by a metric) stay in memory:
        # 32 MiB of page cache per connection (SQLite's default is 2 MiB), the file memory-mapped
        cursor.execute("PRAGMA cache_size=-32768")
        cursor.execute("PRAGMA mmap_size=268435456")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA case_sensitive_like=ON")  # like PostgreSQL; ilike ignores case
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("molen_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

"""Conformance suite of the SQL metadata store, run against SQLite and a real PostgreSQL.

Every behaviour is checked the same way on both back ends: the same test, parametrised over
``sqlite:///…`` and ``postgresql+psycopg://…``. Search results are compared with a reference
computed in plain Python over the same data.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import random
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from conftest import molen_server
from molen.entities import RUN_STATUSES, Artifact, DataInput, Metric, RunStatus
from molen.errors import (
    AmbiguousIdError,
    ConflictError,
    InvalidValueError,
    MolenError,
    NotFoundError,
    SchemaVersionError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)
from molen.query import SortKey, parse_filter, parse_sort
from molen.stores.metadata import SqlMetadataStore, close_metadata_stores, open_metadata_store
from molen.stores.metadata import schema as t
from molen.stores.metadata.http import HttpMetadataStore
from molen.stores.metadata.migrate import HEAD

if TYPE_CHECKING:
    from conftest import PostgresServer

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("http", id="http"),  # the same store behind `molen server`, over HTTP
]

# --------------------------------------------------------------------------- helpers


def backend_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """A fresh, empty database of ``backend`` (``postgres_url`` is fetched only when needed)."""
    if backend in {"sqlite", "http"}:
        return f"sqlite:///{tmp_path}/molen.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlMetadataStore]:
    """A freshly opened (and so migrated) store on an empty database of each back end; for
    ``http``, its client, talking to a real `molen server` over that database."""
    url = backend_url(request, request.param, tmp_path)
    with contextlib.ExitStack() as stack:
        if request.param == "http":
            served = stack.enter_context(molen_server(url, tmp_path / "objects"))
            DATABASE_OF[served] = url
            opened: SqlMetadataStore = HttpMetadataStore(served)  # type: ignore[assignment]
        else:
            opened = SqlMetadataStore(url)
        try:
            yield opened
        finally:
            opened.close()


def sql_only(store: Any) -> None:
    """This test looks inside the database: not for a store behind `molen server`."""
    if isinstance(store, HttpMetadataStore):
        pytest.skip("inspects the database directly; the same test runs on sqlite and postgresql")


def new_id() -> str:
    return uuid.uuid4().hex


def make_run(
    store: SqlMetadataStore,
    experiment_id: int,
    *,
    name: str = "run",
    start_time: int = 1_000,
    run_id: str | None = None,
    **kwargs: Any,
) -> str:
    run_id = run_id or new_id()
    store.create_run(run_id=run_id, experiment_id=experiment_id, name=name, start_time=start_time, **kwargs)
    return run_id


#: The database behind each `molen server` a test started (its client has no engine).
DATABASE_OF: dict[str, str] = {}


def database_url(store: Any) -> str:
    """The database URL of ``store`` (behind the server, for the http back end)."""
    return DATABASE_OF.get(store.url, store.url)


def count_rows(store: SqlMetadataStore, table: sa.Table, run_id: str | None = None) -> int:
    if isinstance(store, HttpMetadataStore):  # count in the database behind the server
        direct = SqlMetadataStore(database_url(store))
        try:
            return count_rows(direct, table, run_id)
        finally:
            direct.close()
    query = sa.select(sa.func.count()).select_from(table)
    if run_id is not None:
        query = query.where(table.c.run_id == run_id)
    with store.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def raw_engine(url: str) -> sa.Engine:
    """An engine that bypasses the store (no migration, no pragmas) to inspect or tamper."""
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def db_snapshot(url: str) -> dict[str, Any]:
    """Tables, revision and row counts of a database: enough to see whether it changed."""
    engine = raw_engine(url)
    try:
        with engine.connect() as connection:
            names = sorted(sa.inspect(connection).get_table_names())
            counts = {
                name: connection.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar_one()
                for name in names
            }
            version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        return {"tables": names, "counts": counts, "version": version}
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- schema


def test_schema_is_created_on_open_and_matches_the_tables(store: SqlMetadataStore) -> None:
    sql_only(store)
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
        tables = set(sa.inspect(connection).get_table_names())
        assert set(t.metadata.tables) | {"alembic_version"} == tables
        # the migration creates exactly what schema.py declares (no drift between the two)
        assert compare_metadata(MigrationContext.configure(connection), t.metadata) == []


def test_opening_twice_is_fine_and_sees_the_same_data(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("e")
    run_id = make_run(store, experiment.id)
    again = SqlMetadataStore(database_url(store))
    try:
        assert again.get_run(run_id).experiment == "e"
        with again.engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        assert [tuple(row) for row in rows] == [(HEAD,)]
    finally:
        again.close()


def test_database_from_a_newer_molen_is_refused_untouched(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("e")
    make_run(store, experiment.id)
    url = database_url(store)
    store.close()
    engine = raw_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE alembic_version SET version_num='9999'"))
    finally:
        engine.dispose()
    before = db_snapshot(url)

    with pytest.raises(SchemaVersionError) as caught:
        SqlMetadataStore(url)

    message = str(caught.value)
    assert isinstance(caught.value, StoreError)
    assert "9999" in message
    assert "upgrade molen" in message
    assert "\n" not in message
    assert db_snapshot(url) == before
    assert before["version"] == "9999"


def test_sqlite_store_creates_missing_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "molen.db"
    opened = SqlMetadataStore(f"sqlite:///{path}")
    try:
        assert path.is_file()
        assert opened.get_or_create_experiment("x").name == "x"
    finally:
        opened.close()


def test_open_metadata_store_opens_each_url_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/molen.db"
    try:
        first = open_metadata_store(url)
        assert open_metadata_store(url) is first
        other = open_metadata_store(f"sqlite:///{tmp_path}/other.db")
        assert other is not first
        close_metadata_stores()
        reopened = open_metadata_store(url)
        assert reopened is not first
        assert reopened.get_or_create_experiment("e").name == "e"
    finally:
        close_metadata_stores()


# --------------------------------------------------------------------------- experiments


def test_get_or_create_experiment_is_idempotent(store: SqlMetadataStore) -> None:
    first = store.get_or_create_experiment("alpha")
    assert first.name == "alpha"
    assert first.lifecycle == "active"
    assert first.created_at > 0
    assert store.get_or_create_experiment("alpha") == first
    other = store.get_or_create_experiment("beta")
    assert other.id != first.id
    assert store.get_experiment("alpha") == first
    # a second store on the same database (no cache) agrees
    again = SqlMetadataStore(database_url(store))
    try:
        assert again.get_or_create_experiment("alpha").id == first.id
    finally:
        again.close()
    assert [e.name for e in store.list_experiments()] == ["alpha", "beta"]


def test_get_experiment_of_a_missing_name_raises_not_found(store: SqlMetadataStore) -> None:
    store.get_or_create_experiment("present")
    with pytest.raises(NotFoundError, match="nope"):
        store.get_experiment("nope")


def test_list_experiments_counts_only_active_runs(store: SqlMetadataStore) -> None:
    a = store.get_or_create_experiment("a")
    b = store.get_or_create_experiment("b")
    store.get_or_create_experiment("empty")
    runs_a = [make_run(store, a.id) for _ in range(3)]
    make_run(store, b.id)
    store.set_lifecycle([runs_a[0]], "deleted")
    listed = store.list_experiments()
    assert [(e.name, e.run_count) for e in listed] == [("a", 2), ("b", 1), ("empty", 0)]
    assert [e.id for e in listed][:2] == [a.id, b.id]


# --------------------------------------------------------------------------- runs


def test_create_run_and_get_run_round_trip_every_field(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    parent = make_run(store, experiment.id, name="parent", start_time=5)
    run_id = make_run(
        store,
        experiment.id,
        name="child run",
        start_time=1_700_000_000_123,
        parent_id=parent,
        user="ann",
        host="box-1",
        pid=4242,
        pid_started=1_700_000_000.5,
        tags={"team": "vision", "empty": ""},
    )
    record = store.get_run(run_id)
    assert record.id == run_id
    assert record.experiment_id == experiment.id
    assert record.experiment == "exp"
    assert record.name == "child run"
    assert record.status == RunStatus.RUNNING
    assert record.start_time == 1_700_000_000_123
    assert record.end_time is None
    assert record.duration_ms is None
    assert record.parent_id == parent
    assert record.lifecycle == "active"
    assert record.user == "ann"
    assert record.host == "box-1"
    assert record.params == {}
    assert record.metrics == {}
    assert record.tags == {"team": "vision", "empty": ""}
    assert record.inputs == []
    assert record.artifacts == []
    running = {row[0]: tuple(row) for row in store.running_runs()}
    assert running[run_id] == (run_id, "box-1", 4242, 1_700_000_000.5, 1_700_000_000_123)
    assert running[parent][1:] == (None, None, None, 5)


def test_create_run_with_artifacts_stores_them(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    artifacts = [Artifact("molen/packages.txt", "a" * 64, 10), Artifact("molen/git.diff", "b" * 64, 3)]
    run_id = make_run(store, experiment.id, artifacts=artifacts)
    assert store.get_run(run_id).artifacts == sorted(artifacts, key=lambda a: a.path)


def test_get_run_of_a_missing_id_raises_not_found(store: SqlMetadataStore) -> None:
    with pytest.raises(NotFoundError):
        store.get_run(new_id())


def test_log_batch_writes_params_tags_and_metrics(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id)
    other = make_run(store, experiment.id)
    store.log_batch(
        run_id,
        params={"lr": "0.01", "layers": "[64, 32]", "quote": 'it\'s "x"'},
        tags={"stage": "dev"},
        metrics=[Metric("loss", 0.5, 0, 10), Metric("acc", 0.9, 0, 10)],
    )
    store.log_batch(run_id, params={"extra": "1"}, metrics=[Metric("loss", 0.25, 1, 11)])
    record = store.get_run(run_id)
    assert record.params == {"lr": "0.01", "layers": "[64, 32]", "quote": 'it\'s "x"', "extra": "1"}
    assert record.tags == {"stage": "dev"}
    assert record.metrics == {"loss": 0.25, "acc": 0.9}
    untouched = store.get_run(other)
    assert (untouched.params, untouched.tags, untouched.metrics) == ({}, {}, {})


def test_param_relogged_with_the_same_value_is_fine(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id)
    store.log_batch(run_id, params={"lr": "0.1", "depth": "3"})
    store.log_batch(run_id, params={"lr": "0.1"})
    store.log_batch(run_id, params={"lr": "0.1", "depth": "3", "new": "x"})
    assert store.get_run(run_id).params == {"lr": "0.1", "depth": "3", "new": "x"}
    assert count_rows(store, t.params, run_id) == 3


def test_param_relogged_with_another_value_conflicts_and_writes_nothing(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id)
    store.log_batch(run_id, params={"lr": "0.1", "depth": "3"})
    with pytest.raises(ConflictError, match="lr") as caught:
        store.log_batch(run_id, params={"lr": "0.2"})
    assert "0.1" in str(caught.value)
    assert "0.2" in str(caught.value)
    # several params, one conflicting: the whole batch (new params, tags, metrics) is refused
    with pytest.raises(ConflictError, match="depth"):
        store.log_batch(
            run_id,
            params={"lr": "0.1", "depth": "4", "fresh": "yes"},
            tags={"t": "v"},
            metrics=[Metric("m", 1.0, 0, 1)],
        )
    record = store.get_run(run_id)
    assert record.params == {"lr": "0.1", "depth": "3"}
    assert record.tags == {}
    assert record.metrics == {}
    assert count_rows(store, t.metrics, run_id) == 0


def test_tags_are_upserted(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id, tags={"a": "1", "b": "2"})
    store.log_batch(run_id, tags={"a": "changed", "c": "3"})
    store.log_batch(run_id, tags={"c": "again"})
    assert store.get_run(run_id).tags == {"a": "changed", "b": "2", "c": "again"}
    assert count_rows(store, t.tags, run_id) == 3


def test_many_metric_values_with_steps(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id)
    for chunk in range(4):
        store.log_batch(
            run_id,
            metrics=[
                Metric(key, float(step) * (2 if key == "b" else 1), step, 1_000 + step)
                for step in range(chunk * 50, chunk * 50 + 50)
                for key in ("a", "b")
            ],
        )
    assert count_rows(store, t.metrics, run_id) == 400
    assert count_rows(store, t.latest_metrics, run_id) == 2
    history = store.metric_history(run_id, "b")
    assert [m.step for m in history] == list(range(200))
    assert [m.value for m in history] == [2.0 * s for s in range(200)]
    assert all(m.key == "b" and m.timestamp == 1_000 + m.step for m in history)
    assert store.get_run(run_id).metrics == {"a": 199.0, "b": 398.0}
    assert store.metric_history(run_id, "missing") == []


def test_latest_metric_is_highest_step_then_newest_timestamp(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id)
    rng = random.Random(7)
    logged: list[Metric] = []
    for key in ("loss", "acc", "lr"):
        # several values per step, at distinct timestamps
        stamps = rng.sample(range(10_000, 20_000), 60)
        for i, stamp in enumerate(stamps):
            logged.append(Metric(key, round(rng.uniform(-5, 5), 6), i % 12, stamp))
    # a metric whose highest step came early in time, and an older value at that step later on
    logged += [Metric("odd", 1.0, 9, 500), Metric("odd", 2.0, 3, 900), Metric("odd", 3.0, 9, 400)]
    rng.shuffle(logged)
    for start in range(0, len(logged), 37):  # several batches, in shuffled order
        store.log_batch(run_id, metrics=logged[start : start + 37])

    expected = {}
    for key in {m.key for m in logged}:
        best = max((m for m in logged if m.key == key), key=lambda m: (m.step, m.timestamp))
        expected[key] = best.value
    assert expected["odd"] == 1.0
    assert store.get_run(run_id).metrics == expected
    for key in ("loss", "odd"):
        history = store.metric_history(run_id, key)
        assert history == sorted((m for m in logged if m.key == key), key=lambda m: (m.step, m.timestamp))


def test_latest_metric_ties_on_step_and_time_take_the_last_logged(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id)
    store.log_batch(run_id, metrics=[Metric("m", 1.0, 5, 100), Metric("m", 2.0, 5, 100)])
    assert store.get_run(run_id).metrics["m"] == 2.0
    store.log_batch(run_id, metrics=[Metric("m", 3.0, 5, 100)])
    assert store.get_run(run_id).metrics["m"] == 3.0
    store.log_batch(run_id, metrics=[Metric("m", 4.0, 4, 999), Metric("m", 5.0, 5, 99)])
    assert store.get_run(run_id).metrics["m"] == 3.0


def test_nan_and_infinite_metric_values_round_trip(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id)
    store.log_batch(
        run_id,
        metrics=[
            Metric("nan", math.nan, 0, 1),
            Metric("pinf", math.inf, 0, 1),
            Metric("ninf", -math.inf, 0, 1),
            Metric("mixed", 1.5, 0, 1),
            Metric("mixed", math.nan, 1, 2),
            Metric("mixed", math.inf, 2, 3),
            Metric("mixed", -math.inf, 3, 4),
        ],
    )
    latest = store.get_run(run_id).metrics
    assert math.isnan(latest["nan"])
    assert latest["pinf"] == math.inf
    assert latest["ninf"] == -math.inf
    assert latest["mixed"] == -math.inf
    history = [m.value for m in store.metric_history(run_id, "mixed")]
    assert history[0] == 1.5
    assert math.isnan(history[1])
    assert history[2:] == [math.inf, -math.inf]
    assert math.isnan(store.metric_history(run_id, "nan")[0].value)
    # the latest value of a run whose last metric is NaN reads back as NaN in searches too
    store.log_batch(run_id, metrics=[Metric("mixed", math.nan, 4, 5)])
    (found,) = store.search_runs()
    assert math.isnan(found.metrics["mixed"])


def test_end_run_sets_status_and_end_time(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id, start_time=1_000)
    other = make_run(store, experiment.id, start_time=1_000)
    assert store.end_run(run_id, RunStatus.FINISHED, 4_500) is True
    record = store.get_run(run_id)
    assert (record.status, record.end_time, record.duration_ms) == (RunStatus.FINISHED, 4_500, 3_500)
    assert store.get_run(other).status == RunStatus.RUNNING
    assert run_id not in {row[0] for row in store.running_runs()}
    assert store.end_run(new_id(), RunStatus.FINISHED, 1) is False


def test_end_run_only_if_running_leaves_a_finished_run_alone(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id)
    assert store.end_run(run_id, RunStatus.FAILED, 2_000, only_if_running=True) is True
    assert store.end_run(run_id, RunStatus.KILLED, 9_000, only_if_running=True) is False
    record = store.get_run(run_id)
    assert (record.status, record.end_time) == (RunStatus.FAILED, 2_000)


def test_log_batch_can_end_the_run_and_beat(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id, start_time=1_000)
    store.log_batch(run_id, metrics=[Metric("m", 1.0, 0, 1)], heartbeat=1_500)
    assert {row[0]: row[4] for row in store.running_runs()}[run_id] == 1_500
    store.log_batch(run_id, tags={"done": "yes"}, end=(RunStatus.FINISHED, 3_000))
    record = store.get_run(run_id)
    assert (record.status, record.end_time, record.tags) == (RunStatus.FINISHED, 3_000, {"done": "yes"})
    assert run_id not in {row[0] for row in store.running_runs()}


def test_deleted_runs_are_hidden_and_restorable(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    ids = [make_run(store, experiment.id, start_time=1_000 + i) for i in range(4)]
    store.set_lifecycle(ids[:2], "deleted")
    assert {r.id for r in store.search_runs()} == set(ids[2:])
    assert {r.id for r in store.search_runs(deleted=True)} == set(ids[:2])
    assert all(r.lifecycle == "deleted" for r in store.search_runs(deleted=True))
    assert store.count_runs() == 2
    assert store.count_runs(deleted=True) == 2
    assert store.get_run(ids[0]).lifecycle == "deleted"  # still readable by id
    store.set_lifecycle([ids[0]], "active")
    assert {r.id for r in store.search_runs()} == {ids[0], *ids[2:]}
    assert {r.id for r in store.search_runs(deleted=True)} == {ids[1]}


def test_resolve_run_id(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    twin_a = make_run(store, experiment.id, run_id="abcdef01" + "0" * 24)
    twin_b = make_run(store, experiment.id, run_id="abcdef02" + "0" * 24)
    lone = make_run(store, experiment.id, run_id="12345678" + "f" * 24)
    assert store.resolve_run_id("1234") == lone
    assert store.resolve_run_id(lone) == lone
    assert store.resolve_run_id(" ABCDEF01 ") == twin_a
    assert store.resolve_run_id("abcdef02") == twin_b
    with pytest.raises(AmbiguousIdError) as caught:
        store.resolve_run_id("abcdef0")
    assert isinstance(caught.value, ConflictError)
    assert "abcdef01" in str(caught.value)
    assert "abcdef02" in str(caught.value)
    with pytest.raises(NotFoundError):
        store.resolve_run_id("9999")
    for bad in ("xyz", "", "   ", "abc%", "ab_c", "12-34"):
        with pytest.raises(InvalidValueError):
            store.resolve_run_id(bad)


def test_purge_run_removes_everything_of_the_run(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    victim = make_run(store, experiment.id, tags={"t": "1"})
    child = make_run(store, experiment.id, parent_id=victim)
    keeper = make_run(store, experiment.id, tags={"t": "2"})
    shared = DataInput("data/train.csv", "d" * 64, "input", "file", 100, 1)
    for run_id in (victim, keeper):
        store.log_batch(run_id, params={"p": "1"}, metrics=[Metric("m", 1.0, s, s) for s in range(3)])
        store.add_data_input(run_id, shared)
    store.add_artifact(victim, Artifact("model.pkl", "e" * 64, 5))
    store.add_artifact(keeper, Artifact("model.pkl", "f" * 64, 6))

    store.purge_run(victim)

    with pytest.raises(NotFoundError):
        store.get_run(victim)
    for table in (t.metrics, t.latest_metrics, t.params, t.tags, t.artifacts, t.run_inputs):
        assert count_rows(store, table, victim) == 0, table.name
    assert store.get_run(child).parent_id is None
    kept = store.get_run(keeper)
    assert (kept.params, kept.tags, kept.metrics) == ({"p": "1"}, {"t": "2"}, {"m": 1.0})
    assert len(store.metric_history(keeper, "m")) == 3
    assert store.runs_using(shared.digest) == [keeper]
    assert store.referenced_digests() == {"d" * 64, "f" * 64}
    assert {r.id for r in store.search_runs()} == {child, keeper}


def test_log_batch_to_a_missing_run_is_a_molen_error(store: SqlMetadataStore) -> None:
    missing = new_id()
    with pytest.raises(MolenError):
        store.log_batch(missing, metrics=[Metric("m", 1.0, 0, 0)])
    assert count_rows(store, t.metrics) == 0


# --------------------------------------------------------------------------- artifacts, data


def test_add_artifact_same_path_replaces(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    run_id = make_run(store, experiment.id)
    store.add_artifact(run_id, Artifact("model/weights.bin", "1" * 64, 100))
    store.add_artifact(run_id, Artifact("a/readme.md", "2" * 64, 7))
    store.add_artifact(run_id, Artifact("model/weights.bin", "3" * 64, 200))
    assert store.get_run(run_id).artifacts == [
        Artifact("a/readme.md", "2" * 64, 7),
        Artifact("model/weights.bin", "3" * 64, 200),
    ]
    assert store.referenced_digests() == {"2" * 64, "3" * 64}
    # searches do not load artifacts or inputs
    assert store.search_runs()[0].artifacts == []


def test_data_inputs_are_stored_once_and_linked_to_each_run(store: SqlMetadataStore) -> None:
    experiment = store.get_or_create_experiment("exp")
    first = make_run(store, experiment.id)
    second = make_run(store, experiment.id)
    make_run(store, experiment.id)
    data = DataInput("data/train", "a" * 64, "input", "folder", 12_345, 17)
    output = DataInput("out/preds.csv", "b" * 64, "output", "file", 99, 1)
    store.add_data_input(first, data)
    store.add_data_input(first, data)  # the same link again is a no-op
    store.add_data_input(first, output)
    store.add_data_input(second, DataInput("elsewhere/train", "a" * 64, "input", "folder", 12_345, 17))

    assert count_rows(store, t.data_versions) == 2
    assert count_rows(store, t.run_inputs, first) == 2
    assert sorted(store.runs_using("a" * 64)) == sorted([first, second])
    assert store.runs_using("b" * 64) == [first]
    assert store.runs_using("c" * 64) == []
    assert store.get_run(first).inputs == [data, output]  # by role, then path
    assert store.get_run(second).inputs == [
        DataInput("elsewhere/train", "a" * 64, "input", "folder", 12_345, 17)
    ]
    assert store.referenced_digests() == {"a" * 64, "b" * 64}


def test_referenced_digests_of_an_empty_store(store: SqlMetadataStore) -> None:
    assert store.referenced_digests() == set()
    assert store.search_runs() == []
    assert store.count_runs() == 0
    assert store.list_experiments() == []


# --------------------------------------------------------------------------- search

BASE_TIME = 1_893_456_000_000  # 2030-01-01T00:00:00Z in ms
N_RUNS = 64
DELETED = {5, 17, 42}


@dataclass
class RefRun:
    """What the search world wrote for one run: the reference the store is checked against."""

    id: str
    experiment_id: int
    experiment: str
    name: str
    status: str
    start_time: int
    end_time: int | None
    user: str | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    deleted: bool = False


@dataclass
class World:
    store: SqlMetadataStore
    runs: list[RefRun]
    experiments: dict[str, int]

    @property
    def active(self) -> list[RefRun]:
        return [r for r in self.runs if not r.deleted]


def build_world(store: SqlMetadataStore) -> World:
    rng = random.Random(20300101)
    experiments = {name: store.get_or_create_experiment(name).id for name in ("exp-a", "exp-b")}
    order = list(range(N_RUNS))
    rng.shuffle(order)  # start times not in creation order
    runs: list[RefRun] = []
    for i in range(N_RUNS):
        experiment = "exp-b" if i % 3 == 0 else "exp-a"
        run_id = ("abcd" + f"{rng.getrandbits(112):028x}") if i in (3, 4) else f"{rng.getrandbits(128):032x}"
        status = rng.choice(RUN_STATUSES)
        start = BASE_TIME + order[i] * 1_000
        ref = RefRun(
            id=run_id,
            experiment_id=experiments[experiment],
            experiment=experiment,
            name=f"{rng.choice(['train', 'eval', 'tune'])}-{i:02d}",
            status=status,
            start_time=start,
            end_time=None if status == RunStatus.RUNNING else start + rng.randint(1, 20) * 500,
            user=rng.choice(["ann", "bob", None]),
            deleted=i in DELETED,
        )
        if i % 7:
            ref.params["lr"] = rng.choice(["0.1", "0.01", "0.001"])
        if i % 5:
            ref.params["model"] = rng.choice(["xgb", "rf", "lin", "xgb-large"])
        if rng.random() < 0.6:
            ref.params["depth"] = str(rng.randint(1, 6))
        if i % 6:
            ref.metrics["acc"] = round(rng.random(), 2)  # two decimals: ties happen
        if i % 4:
            ref.metrics["loss"] = 0.777 if i in (1, 2) else round(rng.uniform(0, 2), 3)
        if rng.random() < 0.7:
            ref.tags["team"] = rng.choice(["a", "b"])
        if i % 8 == 0:
            ref.tags["stage"] = "prod"

        store.create_run(
            run_id=ref.id,
            experiment_id=ref.experiment_id,
            name=ref.name,
            start_time=ref.start_time,
            user=ref.user,
            tags={"team": "placeholder"} if "team" in ref.tags else None,
        )
        history = [
            Metric(key, round(rng.uniform(-1, 3), 3), step, ref.start_time + step)
            for key in ref.metrics
            for step in range(3)
        ]
        history += [Metric(key, value, 3, ref.start_time + 3) for key, value in ref.metrics.items()]
        rng.shuffle(history)
        store.log_batch(ref.id, params=ref.params, tags=ref.tags, metrics=history)
        if ref.end_time is not None:
            store.end_run(ref.id, ref.status, ref.end_time)
        runs.append(ref)
    store.set_lifecycle([r.id for r in runs if r.deleted], "deleted")
    return World(store, runs, experiments)


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """~60 runs with varied params, metrics, tags and statuses, built once per back end."""
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if request.param in {"sqlite", "http"}:
        url = f"sqlite:///{tmp_path_factory.mktemp('world')}/molen.db"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database()
        drop = lambda: server.drop_database(sa.make_url(url).database or "")  # noqa: E731
    with contextlib.ExitStack() as stack:
        if request.param == "http":
            served = stack.enter_context(molen_server(url, tmp_path_factory.mktemp("objects")))
            opened: SqlMetadataStore = HttpMetadataStore(served)  # type: ignore[assignment]
        else:
            opened = SqlMetadataStore(url)
        try:
            yield build_world(opened)
        finally:
            opened.close()
            drop()


def _like(pattern: str) -> Callable[[str], bool]:
    """SQL LIKE as a Python predicate (case-sensitive, ``%`` and ``_`` wildcards)."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return lambda value: re.fullmatch(regex, value, re.DOTALL) is not None


def _has(values: dict[str, Any], key: str, test: Callable[[Any], bool]) -> bool:
    """A keyed comparison: a run without ``key`` never matches."""
    return key in values and test(values[key])


FILTER_CASES: list[tuple[str, Callable[[RefRun], bool]]] = [
    ("metrics.acc > 0.5", lambda r: _has(r.metrics, "acc", lambda v: v > 0.5)),
    ("metrics.acc <= 0.3", lambda r: _has(r.metrics, "acc", lambda v: v <= 0.3)),
    ("metrics.loss = 0.777", lambda r: _has(r.metrics, "loss", lambda v: v == 0.777)),
    ("metrics.loss != 0.777", lambda r: _has(r.metrics, "loss", lambda v: v != 0.777)),
    (
        "metrics.acc >= 0.25 and metrics.acc < 0.75",
        lambda r: _has(r.metrics, "acc", lambda v: 0.25 <= v < 0.75),
    ),
    ("params.lr = '0.01'", lambda r: _has(r.params, "lr", lambda v: v == "0.01")),
    ("params.lr != '0.01'", lambda r: _has(r.params, "lr", lambda v: v != "0.01")),
    ("params.depth <> '3'", lambda r: _has(r.params, "depth", lambda v: v != "3")),
    ("params.model like 'xgb%'", lambda r: _has(r.params, "model", _like("xgb%"))),
    ("params.model like '_gb'", lambda r: _has(r.params, "model", _like("_gb"))),
    ("params.lr in ('0.1', '0.001')", lambda r: _has(r.params, "lr", lambda v: v in ("0.1", "0.001"))),
    ("params.lr not in ('0.1')", lambda r: _has(r.params, "lr", lambda v: v != "0.1")),
    ("tags.team = 'a'", lambda r: _has(r.tags, "team", lambda v: v == "a")),
    (
        "tags.stage = 'prod' or tags.team = 'b'",
        lambda r: r.tags.get("stage") == "prod" or r.tags.get("team") == "b",
    ),
    ("status = 'FINISHED'", lambda r: r.status == "FINISHED"),
    ("status != 'RUNNING'", lambda r: r.status != "RUNNING"),
    ("status in ('FAILED', 'KILLED')", lambda r: r.status in ("FAILED", "KILLED")),
    ("name like 'eval%'", lambda r: r.name.startswith("eval")),
    ("name like '%-1_'", lambda r: _like("%-1_")(r.name)),
    ("user = 'ann'", lambda r: r.user == "ann"),
    ("experiment = 'exp-b'", lambda r: r.experiment == "exp-b"),
    (
        "metrics.acc > 0.5 and params.model = 'rf'",
        lambda r: _has(r.metrics, "acc", lambda v: v > 0.5) and r.params.get("model") == "rf",
    ),
    (
        "metrics.acc > 0.8 or tags.team = 'b'",
        lambda r: _has(r.metrics, "acc", lambda v: v > 0.8) or r.tags.get("team") == "b",
    ),
    ("not metrics.acc > 0.5", lambda r: not _has(r.metrics, "acc", lambda v: v > 0.5)),
    (
        "not (params.lr = '0.1' or params.model = 'lin')",
        lambda r: not (r.params.get("lr") == "0.1" or r.params.get("model") == "lin"),
    ),
    ("metrics.acc is null", lambda r: "acc" not in r.metrics),
    ("metrics.acc is not null", lambda r: "acc" in r.metrics),
    (
        "tags.team is null and params.lr = '0.1'",
        lambda r: "team" not in r.tags and r.params.get("lr") == "0.1",
    ),
    (
        "status in ('FAILED', 'KILLED') and not (params.model = 'xgb' or metrics.loss < 0.5)",
        lambda r: (
            r.status in ("FAILED", "KILLED")
            and not (r.params.get("model") == "xgb" or _has(r.metrics, "loss", lambda v: v < 0.5))
        ),
    ),
    ("duration >= 5000", lambda r: r.end_time is not None and r.end_time - r.start_time >= 5000),
    ("start_time >= '2030-01-01T00:00:30'", lambda r: r.start_time >= BASE_TIME + 30_000),
    ("run_id = 'abcd'", lambda r: r.id.startswith("abcd")),
    (
        "PARAMS.`lr` = \"0.1\" AND Metrics.acc > 0.1 OR attributes.status = 'KILLED'",
        lambda r: (
            (r.params.get("lr") == "0.1" and _has(r.metrics, "acc", lambda v: v > 0.1))
            or r.status == "KILLED"
        ),
    ),
]


def reference_sort(runs: list[RefRun], keys: list[SortKey]) -> list[RefRun]:
    """Sorted by ``keys`` (missing values last either way), then newest first, then by id."""

    def value(run: RefRun, key: SortKey) -> Any:
        kind, name = key.field.kind, key.field.name
        if kind == "attributes":
            return {"start_time": run.start_time, "name": run.name, "status": run.status}[name]
        source: dict[str, Any] = getattr(run, kind)
        return source.get(name)

    ordered = sorted(runs, key=lambda r: r.id)
    ordered.sort(key=lambda r: r.start_time, reverse=True)  # stable, like every sort below
    for key in reversed(keys):
        present = [r for r in ordered if value(r, key) is not None]
        missing = [r for r in ordered if value(r, key) is None]
        present.sort(key=lambda r: value(r, key), reverse=key.descending)
        ordered = present + missing
    return ordered


@pytest.mark.parametrize(("text", "predicate"), FILTER_CASES, ids=[case[0] for case in FILTER_CASES])
def test_search_runs_filter_matches_reference(
    world: World, text: str, predicate: Callable[[RefRun], bool]
) -> None:
    where = parse_filter(text)
    expected = [r.id for r in reference_sort([r for r in world.active if predicate(r)], [])]
    found = world.store.search_runs(where=where)
    assert [r.id for r in found] == expected
    assert world.store.count_runs(where=where) == len(expected)
    assert 0 < len(expected) < len(world.active), "the filter must discriminate"


def test_search_runs_returns_latest_values_and_fields(world: World) -> None:
    found = {r.id: r for r in world.store.search_runs()}
    assert len(found) == len(world.active) == N_RUNS - len(DELETED)
    for ref in world.active:
        record = found[ref.id]
        assert (record.name, record.status, record.start_time, record.end_time, record.user) == (
            ref.name,
            ref.status,
            ref.start_time,
            ref.end_time,
            ref.user,
        )
        assert (record.experiment_id, record.experiment) == (ref.experiment_id, ref.experiment)
        assert record.params == ref.params
        assert record.metrics == ref.metrics
        assert record.tags == ref.tags


SORT_CASES = [
    "metrics.acc",
    "-metrics.acc",
    "metrics.loss desc",
    "params.lr, -metrics.acc",
    "params.model asc, start_time",
    "tags.team desc, metrics.loss",
    "start_time",
    "-start_time",
    "name",
]


@pytest.mark.parametrize("text", SORT_CASES)
def test_search_runs_sort_matches_reference(world: World, text: str) -> None:
    keys = parse_sort(text)
    expected = [r.id for r in reference_sort(world.active, keys)]
    assert [r.id for r in world.store.search_runs(sort=keys)] == expected


def test_sort_puts_missing_metric_values_last_both_ways(world: World) -> None:
    for text in ("metrics.acc", "-metrics.acc"):
        found = world.store.search_runs(sort=parse_sort(text))
        has_acc = ["acc" in r.metrics for r in found]
        assert has_acc == sorted(has_acc, reverse=True)
        values = [r.metrics["acc"] for r in found if "acc" in r.metrics]
        assert values == sorted(values, reverse=text.startswith("-"))


@pytest.mark.parametrize(
    ("where", "sort"),
    [
        (None, ""),
        ("params.lr != '0.01'", "-metrics.acc"),
        ("metrics.loss > 0.2", "params.model, metrics.loss"),
    ],
)
def test_limit_offset_paging_covers_the_whole_result(world: World, where: str | None, sort: str) -> None:
    tree = parse_filter(where) if where else None
    keys = parse_sort(sort) if sort else []
    whole = [r.id for r in world.store.search_runs(where=tree, sort=keys)]
    assert len(whole) == world.store.count_runs(where=tree)
    pages: list[str] = []
    for offset in range(0, len(whole) + 7, 7):
        page = world.store.search_runs(where=tree, sort=keys, limit=7, offset=offset)
        assert len(page) <= 7
        pages += [r.id for r in page]
    assert pages == whole
    assert world.store.search_runs(where=tree, sort=keys, offset=len(whole)) == []
    assert [r.id for r in world.store.search_runs(where=tree, sort=keys, offset=3)] == whole[3:]
    assert [r.id for r in world.store.search_runs(where=tree, sort=keys, limit=4)] == whole[:4]


def test_experiment_ids_restrict_search_and_count(world: World) -> None:
    b = world.experiments["exp-b"]
    expected = [r.id for r in reference_sort([r for r in world.active if r.experiment_id == b], [])]
    assert [r.id for r in world.store.search_runs(experiment_ids=[b])] == expected
    assert world.store.count_runs(experiment_ids=[b]) == len(expected)
    both = list(world.experiments.values())
    assert world.store.count_runs(experiment_ids=both) == len(world.active)
    assert world.store.search_runs(experiment_ids=[]) == []
    assert world.store.count_runs(experiment_ids=[]) == 0
    where = parse_filter("metrics.acc > 0.5")
    expected = [
        r.id
        for r in reference_sort(
            [r for r in world.active if r.experiment_id == b and r.metrics.get("acc", 0) > 0.5], []
        )
    ]
    assert [r.id for r in world.store.search_runs(where=where, experiment_ids=[b])] == expected
    assert world.store.count_runs(where=where, experiment_ids=[b]) == len(expected)


def test_deleted_runs_of_the_world(world: World) -> None:
    deleted = [r for r in world.runs if r.deleted]
    expected = [r.id for r in reference_sort(deleted, [])]
    assert [r.id for r in world.store.search_runs(deleted=True)] == expected
    assert world.store.count_runs(deleted=True) == len(DELETED)
    where = parse_filter("metrics.acc is not null or metrics.acc is null")
    assert world.store.count_runs(where=where) == len(world.active)


def test_like_is_case_sensitive_on_every_back_end(
    store: SqlMetadataStore, request: pytest.FixtureRequest
) -> None:
    experiment = store.get_or_create_experiment("exp")
    upper = make_run(store, experiment.id, name="Train-1")
    lower = make_run(store, experiment.id, name="train-2")
    store.log_batch(upper, params={"model": "XGB"})
    store.log_batch(lower, params={"model": "xgb"})
    # ilike is the case-insensitive one, on both back ends
    assert {r.id for r in store.search_runs(where=parse_filter("name ilike 'train%'"))} == {upper, lower}
    assert {r.id for r in store.search_runs(where=parse_filter("params.model ilike 'xgb'"))} == {upper, lower}
    assert [r.id for r in store.search_runs(where=parse_filter("name like 'train%'"))] == [lower]
    assert [r.id for r in store.search_runs(where=parse_filter("params.model like 'xgb'"))] == [lower]


# --------------------------------------------------------------------------- concurrency


def test_threads_write_at_once_without_losing_rows(store: SqlMetadataStore) -> None:
    threads, runs_per_thread = 4, 25
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            barrier.wait(timeout=30)
            experiment = store.get_or_create_experiment("shared")  # a creation race, too
            for i in range(runs_per_thread):
                run_id = make_run(store, experiment.id, name=f"w{worker}-{i}", start_time=i)
                store.log_batch(
                    run_id,
                    params={"worker": str(worker)},
                    metrics=[Metric(k, float(s), s, s) for s in range(5) for k in ("a", "b")],
                )
                store.log_batch(
                    run_id,
                    tags={"i": str(i)},
                    metrics=[Metric(k, float(s), s, s) for s in range(5, 10) for k in ("a", "b")],
                )
                store.end_run(run_id, RunStatus.FINISHED, 100)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    assert errors == []
    total = threads * runs_per_thread
    assert [(e.name, e.run_count) for e in store.list_experiments()] == [("shared", total)]
    assert store.count_runs(where=parse_filter("status = 'FINISHED'")) == total
    assert count_rows(store, t.metrics) == total * 20
    assert count_rows(store, t.latest_metrics) == total * 2
    assert count_rows(store, t.params) == total
    assert count_rows(store, t.tags) == total
    assert all(r.metrics == {"a": 9.0, "b": 9.0} for r in store.search_runs())
    for worker in range(threads):
        assert store.count_runs(where=parse_filter(f"params.worker = '{worker}'")) == runs_per_thread


def _process_writer(url: str, worker: int, runs: int, metrics: int, barrier: Any, results: Any) -> None:
    """Body of one spawned writer process (module level, so that it can be pickled)."""
    errors: list[str] = []
    try:
        opened = SqlMetadataStore(url)
        experiment = opened.get_or_create_experiment("procs")
        barrier.wait(timeout=60)
        for i in range(runs):
            run_id = new_id()
            opened.create_run(run_id=run_id, experiment_id=experiment.id, name=f"p{worker}-{i}", start_time=i)
            half = metrics // 2
            opened.log_batch(
                run_id, params={"worker": str(worker)}, metrics=[Metric("m", s, s, s) for s in range(half)]
            )
            opened.log_batch(run_id, metrics=[Metric("m", s, s, s) for s in range(half, metrics)])
            opened.end_run(run_id, RunStatus.FINISHED, 1_000)
        opened.close()
    except BaseException as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    results.put((worker, errors))


def test_sqlite_processes_write_at_once_without_losing_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/molen.db"
    opened = SqlMetadataStore(url)  # created up front: the children only write
    processes, runs, metrics = 3, 50, 20
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    children = [
        ctx.Process(target=_process_writer, args=(url, w, runs, metrics, barrier, results))
        for w in range(processes)
    ]
    try:
        for child in children:
            child.start()
        reports = dict(results.get(timeout=120) for _ in children)
        for child in children:
            child.join(timeout=30)
            assert child.exitcode == 0
        assert reports == {w: [] for w in range(processes)}
        total = processes * runs
        assert opened.count_runs() == total
        assert opened.count_runs(where=parse_filter("status = 'FINISHED'")) == total
        assert count_rows(opened, t.metrics) == total * metrics
        assert count_rows(opened, t.latest_metrics) == total
        assert [(e.name, e.run_count) for e in opened.list_experiments()] == [("procs", total)]
        for worker in range(processes):
            assert opened.count_runs(where=parse_filter(f"params.worker = '{worker}'")) == runs
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
        opened.close()


def test_sqlite_writer_waits_for_another_process_lock(tmp_path: Path) -> None:
    path = tmp_path / "molen.db"
    opened = SqlMetadataStore(f"sqlite:///{path}")
    try:
        experiment = opened.get_or_create_experiment("exp")
        run_id = make_run(opened, experiment.id)
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock for a second
        timer = threading.Timer(1.0, lambda: holder.execute("ROLLBACK"))
        timer.start()
        started = time.monotonic()
        opened.log_batch(run_id, params={"p": "1"}, metrics=[Metric("m", 1.0, 0, 0)])
        assert time.monotonic() - started >= 0.5
        timer.join()
        holder.close()
        assert opened.get_run(run_id).params == {"p": "1"}
    finally:
        opened.close()


def test_sqlite_first_open_waits_for_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "molen.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")  # e.g. a second process migrating the same fresh file
    timer = threading.Timer(1.0, lambda: holder.execute("ROLLBACK"))
    timer.start()
    try:
        opened = SqlMetadataStore(f"sqlite:///{path}")
        opened.close()
    finally:
        timer.join()
        holder.close()


def test_postgres_first_open_from_many_threads_at_once(postgres_url: str) -> None:
    barrier = threading.Barrier(4)
    outcomes: list[BaseException | None] = []

    def opener() -> None:
        barrier.wait(timeout=30)
        try:
            SqlMetadataStore(postgres_url).close()
            outcomes.append(None)
        except BaseException as exc:
            outcomes.append(exc)

    pool = [threading.Thread(target=opener) for _ in range(4)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    assert outcomes == [None] * 4
    assert db_snapshot(postgres_url)["version"] == HEAD


# --------------------------------------------------------------------------- errors


def test_unreachable_postgres_fails_fast_with_a_safe_one_line_message() -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        SqlMetadataStore("postgresql+psycopg://postgres:secret@127.0.0.1:9/x")
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "127.0.0.1" in message
    assert "secret" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "://missing-scheme",
        "",
        "postgresql+psycopg://u:secret@db.example:notaport/db",
    ],
)
def test_garbage_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        SqlMetadataStore(url)
    assert "secret" not in str(caught.value)


def test_unsupported_database_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as caught:
        SqlMetadataStore("mysql://root:secret@db.example/molen")
    message = str(caught.value)
    assert "secret" not in message
    assert "sqlite" in message and "postgresql" in message


@pytest.mark.postgres
def test_postgres_stopped_mid_use_then_back(postgres_server: PostgresServer, postgres_url: str) -> None:
    opened = SqlMetadataStore(postgres_url)
    try:
        experiment = opened.get_or_create_experiment("exp")
        run_id = make_run(opened, experiment.id)
        opened.search_runs()  # a pooled connection now exists
        try:
            postgres_server.stop()
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as caught:
                opened.get_run(run_id)
            assert time.monotonic() - started < 5
            message = str(caught.value)
            assert "127.0.0.1" in message
            assert "\n" not in message
            with pytest.raises(StoreUnavailableError):
                opened.log_batch(run_id, metrics=[Metric("m", 1.0, 0, 0)])
        finally:
            postgres_server.start()
        assert opened.get_run(run_id).id == run_id
        opened.log_batch(run_id, metrics=[Metric("m", 2.0, 0, 0)])
        assert opened.get_run(run_id).metrics == {"m": 2.0}
    finally:
        opened.close()


# --------------------------------------------------------------------------- the stdlib SQLite reader


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = f"sqlite:///{tmp_path_factory.mktemp('lite')}/molen.db"
    opened = SqlMetadataStore(url)
    try:
        yield build_world(opened)
    finally:
        opened.close()


def _lite(world: World, **kwargs: Any) -> list[Any] | None:
    from molen.stores.metadata.lite import search_runs_lite

    options: dict[str, Any] = {
        "where": None,
        "experiments": None,
        "sort": (),
        "limit": None,
        "deleted": False,
    }
    options.update(kwargs)
    return search_runs_lite(world.store.url, settled_only=False, **options)


@pytest.mark.parametrize(
    "text", [case[0] for case in FILTER_CASES] + ["name like 'EVAL%'", "params.model like 'XGB%'"]
)
def test_the_sqlite_reader_finds_what_the_store_finds(sqlite_world: World, text: str) -> None:
    where = parse_filter(text)
    assert _lite(sqlite_world, where=where) == sqlite_world.store.search_runs(where=where)


@pytest.mark.parametrize("text", SORT_CASES)
def test_the_sqlite_reader_sorts_as_the_store_sorts(sqlite_world: World, text: str) -> None:
    keys = parse_sort(text)
    assert _lite(sqlite_world, sort=keys, limit=7) == sqlite_world.store.search_runs(sort=keys, limit=7)
    assert _lite(sqlite_world, deleted=True) == sqlite_world.store.search_runs(deleted=True)


def test_the_sqlite_reader_steps_aside_when_it_cannot_answer(sqlite_world: World, tmp_path: Path) -> None:
    from molen.stores.metadata.lite import search_runs_lite

    def lite(url: str, **kwargs: Any) -> Any:
        options: dict[str, Any] = {"where": None, "experiments": None, "sort": (), "limit": None}
        return search_runs_lite(url, deleted=False, **{**options, **kwargs})

    url = sqlite_world.store.url
    assert lite(url) is None  # runs still marked RUNNING: the store reaps dead ones first
    assert _lite(sqlite_world, experiments=["no-such-experiment"]) is None  # the store explains
    assert lite("postgresql+psycopg://localhost/x") is None
    assert lite("sqlite:///:memory:") is None and lite(f"sqlite:///{tmp_path}/absent.db") is None
    import sqlite3

    other = tmp_path / "old.db"
    with sqlite3.connect(other) as connection:  # a schema this reader does not know
        connection.execute("CREATE TABLE alembic_version (version_num TEXT)")
        connection.execute("INSERT INTO alembic_version VALUES ('0000')")
    assert lite(f"sqlite:///{other}") is None


def test_search_runs_on_sqlite_needs_no_sqlalchemy(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/molen.db"
    store = SqlMetadataStore(url)
    experiment = store.get_or_create_experiment("e")
    store.create_run(
        run_id="a" * 32,
        experiment_id=experiment.id,
        name="r",
        start_time=1,
        parent_id=None,
        user="u",
        host="h",
        pid=None,
        pid_started=None,
        tags={},
        artifacts=[],
    )
    store.end_run("a" * 32, "FINISHED", 2)
    store.close()
    probe = (
        "import sys, molen; runs = molen.search_runs('name = \"r\"'); "
        "assert [r.id for r in runs] == ['a' * 32], runs; "
        "assert 'sqlalchemy' not in sys.modules, 'SQLAlchemy was imported'"
    )
    env = {**__import__("os").environ, "MOLEN_TRACKING_URI": url}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_processes_creating_one_new_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import os, sys, time; from molen.stores.metadata.sql import SqlMetadataStore\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"  # all start together
        "SqlMetadataStore(sys.argv[1]).get_or_create_experiment('x')"
    )
    for attempt in range(2):
        url = f"sqlite:///{tmp_path / f'new-{attempt}.db'}"
        go = tmp_path / f"go-{attempt}"
        children = [
            subprocess.Popen([sys.executable, "-c", script, url, str(go)], stderr=subprocess.PIPE, text=True)
            for _ in range(6)
        ]
        time.sleep(1.5)  # every child has imported molen and waits
        go.touch()
        for child in children:
            assert child.wait(timeout=120) == 0, child.stderr.read() if child.stderr else ""


def test_a_page_sorted_by_one_metric_is_the_same_page_as_the_full_sort(store: SqlMetadataStore) -> None:
    """search_runs reads a page sorted by one metric from the (key, value) index, then the
    runs without the metric: every page must be the slice of the fully sorted list."""
    import random

    chooser = random.Random(7)
    experiment = store.get_or_create_experiment("pages")
    other = store.get_or_create_experiment("elsewhere")
    for index in range(40):
        run_id = make_run(
            store, other.id if index % 9 == 0 else experiment.id, name=f"r{index}", start_time=index % 13
        )
        shape = chooser.random()
        if shape < 0.6:
            value = float(chooser.choice([1, 2, 2, 3, 5, 8]))  # ties, broken by start time then id
            store.log_batch(run_id, metrics=[Metric("m", value, 0, 1)])
        elif shape < 0.75:
            store.log_batch(run_id, metrics=[Metric("m", math.nan, 0, 1)])  # NaN: with the missing
        elif shape < 0.9:
            store.log_batch(run_id, metrics=[Metric("other", 1.0, 0, 1)])
        if index % 11 == 0:
            store.set_lifecycle([run_id], "deleted")
    for text in ("-metrics.m", "metrics.m"):
        for ids in (None, [experiment.id]):
            for where in (None, parse_filter("name != 'r3'")):
                everything = [
                    r.id for r in store.search_runs(where=where, experiment_ids=ids, sort=parse_sort(text))
                ]
                for limit, offset in ((5, 0), (7, 14), (10, 20), (50, 0), (3, 35), (4, 100)):
                    page = store.search_runs(
                        where=where, experiment_ids=ids, sort=parse_sort(text), limit=limit, offset=offset
                    )
                    assert [r.id for r in page] == everything[offset : offset + limit], (
                        text,
                        ids,
                        limit,
                        offset,
                    )

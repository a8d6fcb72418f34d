"""Reading runs from a SQLite metadata store with the standard library's ``sqlite3``.

Importing SQLAlchemy takes longer here (130–170 ms) than the search itself, which is most of
what `molen runs list` and `molen exp show` cost. So those searches are answered by this
read-only reader when the store is a SQLite file at the current schema revision and no run is
still marked RUNNING; otherwise (PostgreSQL, a schema to migrate, runs that may need to be
marked KILLED first) it steps aside and the full store answers. Both run the same SQL
(:mod:`.search`), and a test holds their answers equal.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from molen.entities import ModelVersion, RunRecord
from molen.query import Filter, SortKey
from molen.stores.metadata.revisions import HEAD
from molen.stores.metadata.search import grouped_query, records_of, runs_query

__all__ = ["model_version_lite", "search_runs_lite", "sqlite_path"]


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///PATH`` URL (None for other stores and in-memory ones)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return path if path and path != ":memory:" else None


def _connect_current(url: str) -> sqlite3.Connection | None:
    """A connection to the SQLite file of ``url`` when it exists at the current schema
    revision; None otherwise (the full store then answers, migrating or explaining)."""
    path = sqlite_path(url)
    if path is None or not os.path.isfile(path):
        return None
    try:
        connection = sqlite3.connect(path, timeout=30)
    except sqlite3.Error:
        return None
    try:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        revision = None
    if revision is None or revision[0] != HEAD:
        connection.close()
        return None
    return connection


def search_runs_lite(
    url: str,
    where: Filter | None,
    experiments: Sequence[str] | None,
    sort: Sequence[SortKey],
    *,
    limit: int | None,
    deleted: bool,
    settled_only: bool = True,
) -> list[RunRecord] | None:
    """The runs :meth:`SqlMetadataStore.search_runs` would return, or None when this reader
    cannot answer (see the module docstring; ``settled_only=False`` reads even while runs are
    marked RUNNING, for tests that compare both readers)."""
    connection = _connect_current(url)
    if connection is None:
        return None
    try:
        connection.execute("PRAGMA case_sensitive_like=ON")  # as the full store reads: like PostgreSQL
        running = connection.execute("SELECT 1 FROM runs WHERE status = 'RUNNING' LIMIT 1").fetchone()
        if running and settled_only:
            return None  # the full store first marks the runs whose process died as KILLED
        experiment_ids = None
        if experiments is not None:
            experiment_ids = []
            for name in experiments:
                found = connection.execute("SELECT id FROM experiments WHERE name = ?", (name,)).fetchone()
                if found is None:
                    return None  # the full store explains the unknown name
                experiment_ids.append(found[0])
        query = runs_query(where, experiment_ids=experiment_ids, sort=sort, limit=limit, deleted=deleted)
        rows = connection.execute(query.sql, query.params).fetchall()
        ids = [row[0] for row in rows]
        params = _grouped(connection, "params", ids)
        tags = _grouped(connection, "tags", ids)
        metrics = _grouped(connection, "latest_metrics", ids)
        return records_of(rows, params, tags, metrics)
    except sqlite3.Error:
        return None
    finally:
        connection.close()


def _grouped(connection: sqlite3.Connection, table: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for chunk in range(0, len(ids), 900):
        part = ids[chunk : chunk + 900]
        for run_id, key, value in connection.execute(grouped_query(table, len(part)), part).fetchall():
            found.setdefault(run_id, {})[key] = value
    return found


_VERSION_COLUMNS = "name, version, run_id, artifact_path, digest, flavor, created_at, user, description"


def model_version_lite(url: str, name: str, version: int | None, alias: str | None) -> ModelVersion | None:
    """The registered version ``name/version``, ``name@alias`` or (neither given) the latest,
    read with ``sqlite3``; None when this reader cannot answer or finds nothing (the full
    store then answers, and explains what is missing)."""
    connection = _connect_current(url)
    if connection is None:
        return None
    try:
        if alias is not None:
            held = connection.execute(
                "SELECT version FROM model_aliases WHERE name = ? AND alias = ?", (name, alias)
            ).fetchone()
            if held is None:
                return None
            version = held[0]
        if version is None:
            sql = (
                f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE name = ? ORDER BY version DESC LIMIT 1"
            )
            row = connection.execute(sql, (name,)).fetchone()
        else:
            sql = f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE name = ? AND version = ?"
            row = connection.execute(sql, (name, version)).fetchone()
        if row is None:
            return None
        aliases = connection.execute(
            "SELECT alias FROM model_aliases WHERE name = ? AND version = ? ORDER BY alias", (name, row[1])
        ).fetchall()
        name, number, run_id, artifact_path, digest, flavor, created_at, user, description = row
        return ModelVersion(
            name,
            number,
            run_id,
            artifact_path,
            digest,
            flavor,
            created_at,
            user,
            description,
            tuple(found[0] for found in aliases),
        )
    except sqlite3.Error:
        return None
    finally:
        connection.close()

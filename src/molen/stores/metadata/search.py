"""Compile the filter language's syntax tree (:mod:`molen.query`) to SQL over molen's tables.

Every value is a bound parameter (``?`` markers, which :func:`for_driver` turns into the
driver's style); no SQL text is built from user input. Standard library only: the same SQL is
run through SQLAlchemy's connection on SQLite and PostgreSQL, and by the stdlib ``sqlite3``
reader that answers quick commands without importing SQLAlchemy (:mod:`.lite`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from molen.entities import Artifact, DataInput, RunRecord
from molen.query import And, Comparison, Field, Filter, Not, Or, SortKey

__all__ = ["RUN_COLUMNS", "RunQuery", "count_query", "for_driver", "records_of", "runs_query"]

#: The columns a run is read with, in the order :func:`records_of` expects them.
RUN_COLUMNS = (
    "runs.id, runs.experiment_id, experiments.name, runs.name, runs.status, runs.start_time, "
    'runs.end_time, runs.parent_id, runs.lifecycle, runs."user", runs.host'
)
_FROM = "runs JOIN experiments ON experiments.id = runs.experiment_id"
_ATTRIBUTE_COLUMNS = {
    "run_id": "runs.id",
    "name": "runs.name",
    "status": "runs.status",
    "experiment": "experiments.name",
    "user": 'runs."user"',
    "start_time": "runs.start_time",
    "end_time": "runs.end_time",
    "duration": "(runs.end_time - runs.start_time)",
    "parent_id": "runs.parent_id",
}
_KEYED = {"metrics": "latest_metrics", "params": "params", "tags": "tags"}
_OPERATORS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "like": "LIKE"}


class RunQuery(NamedTuple):
    """SQL text with ``?`` markers and its parameters, in order."""

    sql: str
    params: tuple[Any, ...]


def for_driver(sql: str, paramstyle: str) -> str:
    """``sql`` with its ``?`` markers in the driver's style (``%s`` for psycopg)."""
    return sql if paramstyle == "qmark" else sql.replace("?", "%s")


def _compare(column: str, comparison: Comparison, params: list[Any]) -> str:
    op, value = comparison.op, comparison.value
    if op in _OPERATORS:
        params.append(value)
        return f"{column} {_OPERATORS[op]} ?"
    if op == "ilike":
        params.append(value)
        return f"lower({column}) LIKE lower(?)"
    if op in {"in", "not_in"}:
        values = list(value) if isinstance(value, tuple) else [value]
        params.extend(values)
        markers = ", ".join("?" * len(values))
        return f"{column} {'IN' if op == 'in' else 'NOT IN'} ({markers})"
    if op == "is_null":
        return f"{column} IS NULL"
    if op == "not_null":
        return f"{column} IS NOT NULL"
    raise ValueError(f"unknown operator {op}")


def _comparison(comparison: Comparison, params: list[Any]) -> str:
    field = comparison.field
    if field.kind == "attributes":
        column = _ATTRIBUTE_COLUMNS[field.name]
        if field.name == "run_id" and comparison.op == "=" and isinstance(comparison.value, str):
            # a run id compares like the CLI resolves it: any unique prefix matches
            params.append(comparison.value.replace("%", "").replace("_", "") + "%")
            return f"{column} LIKE ?"
        return _compare(column, comparison, params)
    # uncorrelated "run id IN (runs having the key [and a matching value])": the database
    # answers it once from the (key, value) index instead of probing run by run
    table = _KEYED[field.kind]
    params.append(field.name)
    having_key = f'SELECT {table}.run_id FROM {table} WHERE {table}."key" = ?'
    if comparison.op == "is_null":
        return f"runs.id NOT IN ({having_key})"
    if comparison.op == "not_null":
        return f"runs.id IN ({having_key})"
    # a run without the key never matches a comparison, as in MLflow
    return f"runs.id IN ({having_key} AND {_compare(f'{table}.value', comparison, params)})"


def _condition(tree: Filter | None, params: list[Any]) -> str:
    if tree is None:
        return "1 = 1"
    if isinstance(tree, Comparison):
        return _comparison(tree, params)
    if isinstance(tree, And):
        return "(" + " AND ".join(_condition(part, params) for part in tree.parts) + ")"
    if isinstance(tree, Or):
        return "(" + " OR ".join(_condition(part, params) for part in tree.parts) + ")"
    if isinstance(tree, Not):
        return f"NOT ({_condition(tree.part, params)})"
    raise TypeError(f"not a filter: {tree!r}")


def _where(
    where: Filter | None, experiment_ids: Sequence[int] | None, deleted: bool, params: list[Any]
) -> str:
    params.append("deleted" if deleted else "active")
    clauses = ["runs.lifecycle = ?", _condition(where, params)]
    if experiment_ids is not None:
        ids = list(experiment_ids)
        params.extend(ids)
        clauses.append(f"runs.experiment_id IN ({', '.join('?' * len(ids))})" if ids else "1 = 0")
    return " AND ".join(clauses)


def runs_query(
    where: Filter | None = None,
    *,
    experiment_ids: Sequence[int] | None = None,
    sort: Sequence[SortKey] = (),
    limit: int | None = None,
    offset: int = 0,
    deleted: bool = False,
    run_id: str | None = None,
) -> RunQuery:
    """The runs matching ``where``, sorted by ``sort`` (missing values last), then newest
    first, then by id; or the one run ``run_id``."""
    join_params: list[Any] = []
    joins: list[str] = []
    order: list[str] = []
    for index, key in enumerate(sort):
        column = _sort_column(key.field, index, joins, join_params)
        order.append(f"{column} {'DESC' if key.descending else 'ASC'} NULLS LAST")
    order += ["runs.start_time DESC", "runs.id ASC"]
    params: list[Any] = []
    if run_id is not None:
        params.append(run_id)
        condition = "runs.id = ?"
    else:
        condition = _where(where, experiment_ids, deleted, params)
    sql = f"SELECT {RUN_COLUMNS} FROM {_FROM}{''.join(joins)} WHERE {condition} ORDER BY {', '.join(order)}"
    if limit is not None or offset:
        sql += " LIMIT ? OFFSET ?"
        params += [2**62 if limit is None else limit, offset]
    return RunQuery(sql, (*join_params, *params))


def by_metric_queries(
    where: Filter | None,
    sort: SortKey,
    *,
    experiment_ids: Sequence[int] | None = None,
    deleted: bool = False,
) -> tuple[str, str, str, list[Any], list[Any]]:
    """The runs ordered by one metric, in two parts a page can be read from without sorting
    every run: (the runs with a value, in the order of the ``(key, value)`` index; how many
    those are; the runs without one (or NaN), newest first), and the parameters of the first
    two and of the third (each query then takes LIMIT and OFFSET). Same order as
    :func:`runs_query`: values, then the missing ones, ties newest first, then by id."""
    condition_params: list[Any] = []
    condition = _where(where, experiment_ids, deleted, condition_params)
    key = sort.field.name
    direction = "DESC" if sort.descending else "ASC"
    having = (
        "FROM latest_metrics AS sort_0 JOIN runs ON runs.id = sort_0.run_id "
        "JOIN experiments ON experiments.id = runs.experiment_id "
        f'WHERE sort_0."key" = ? AND sort_0.value IS NOT NULL AND {condition}'
    )
    with_value = (
        f"SELECT {RUN_COLUMNS} {having} "
        f"ORDER BY sort_0.value {direction}, runs.start_time DESC, runs.id ASC LIMIT ? OFFSET ?"
    )
    counted = f"SELECT count(*) {having}"
    without = (
        f"SELECT {RUN_COLUMNS} FROM {_FROM} WHERE {condition} AND NOT EXISTS (SELECT 1 FROM "
        'latest_metrics AS m WHERE m.run_id = runs.id AND m."key" = ? AND m.value IS NOT NULL) '
        "ORDER BY runs.start_time DESC, runs.id ASC LIMIT ? OFFSET ?"
    )
    return with_value, counted, without, [key, *condition_params], [*condition_params, key]


def count_query(
    where: Filter | None = None, *, experiment_ids: Sequence[int] | None = None, deleted: bool = False
) -> RunQuery:
    """How many runs :func:`runs_query` would find without a limit."""
    params: list[Any] = []
    condition = _where(where, experiment_ids, deleted, params)
    return RunQuery(f"SELECT count(*) FROM {_FROM} WHERE {condition}", tuple(params))


def _sort_column(field: Field, index: int, joins: list[str], params: list[Any]) -> str:
    if field.kind == "attributes":
        return _ATTRIBUTE_COLUMNS[field.name]
    table, alias = _KEYED[field.kind], f"sort_{index}"
    joins.append(f' LEFT OUTER JOIN {table} AS {alias} ON {alias}.run_id = runs.id AND {alias}."key" = ?')
    params.append(field.name)
    return f"{alias}.value"


def records_of(
    rows: Sequence[Sequence[Any]],
    params: dict[str, dict[str, Any]],
    tags: dict[str, dict[str, Any]],
    metrics: dict[str, dict[str, Any]],
    inputs: dict[str, list[DataInput]] | None = None,
    artifacts: dict[str, list[Artifact]] | None = None,
) -> list[RunRecord]:
    """Run records from rows read with :data:`RUN_COLUMNS` and their grouped params, tags
    and latest metrics (a metric stored as NULL is NaN)."""
    return [
        RunRecord(
            id=row[0],
            experiment_id=row[1],
            experiment=row[2],
            name=row[3],
            status=row[4],
            start_time=row[5],
            end_time=row[6],
            parent_id=row[7],
            lifecycle=row[8],
            user=row[9],
            host=row[10],
            params=params.get(row[0], {}),
            metrics={k: math.nan if v is None else v for k, v in metrics.get(row[0], {}).items()},
            tags=tags.get(row[0], {}),
            inputs=(inputs or {}).get(row[0], []),
            artifacts=(artifacts or {}).get(row[0], []),
        )
        for row in rows
    ]


def grouped_query(table: str, count: int) -> str:
    """Key/value rows of ``count`` runs from ``params``, ``tags`` or ``latest_metrics``."""
    return f'SELECT run_id, "key", value FROM {table} WHERE run_id IN ({", ".join("?" * count)})'

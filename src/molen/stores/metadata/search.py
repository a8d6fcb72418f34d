"""Compile the filter language's syntax tree (:mod:`molen.query`) to SQLAlchemy expressions.

Every value is a bound parameter; no SQL text is built from user input.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, not_, or_, select, true
from sqlalchemy.sql.elements import UnaryExpression

from molen.query import And, Comparison, Field, Filter, Not, Or, SortKey
from molen.stores.metadata.schema import experiments, latest_metrics, params, runs, tags

__all__ = ["compile_filter", "order_by"]

_ATTRIBUTE_COLUMNS: dict[str, Any] = {
    "run_id": runs.c.id,
    "name": runs.c.name,
    "status": runs.c.status,
    "experiment": experiments.c.name,
    "user": runs.c.user,
    "start_time": runs.c.start_time,
    "end_time": runs.c.end_time,
    "duration": runs.c.end_time - runs.c.start_time,
    "parent_id": runs.c.parent_id,
}
_KEYED = {"metrics": latest_metrics, "params": params, "tags": tags}


def _compare(column: Any, comparison: Comparison) -> ColumnElement[bool]:
    op, value = comparison.op, comparison.value
    if op == "=":
        return column == value  # type: ignore[no-any-return]
    if op == "!=":
        return column != value  # type: ignore[no-any-return]
    if op == "<":
        return column < value  # type: ignore[no-any-return]
    if op == "<=":
        return column <= value  # type: ignore[no-any-return]
    if op == ">":
        return column > value  # type: ignore[no-any-return]
    if op == ">=":
        return column >= value  # type: ignore[no-any-return]
    if op == "like":
        return column.like(value)  # type: ignore[no-any-return]
    if op == "ilike":
        return column.ilike(value)  # type: ignore[no-any-return]
    if op == "in":
        return column.in_(value)  # type: ignore[no-any-return]
    if op == "not_in":
        return column.not_in(value)  # type: ignore[no-any-return]
    if op == "is_null":
        return column.is_(None)  # type: ignore[no-any-return]
    if op == "not_null":
        return column.is_not(None)  # type: ignore[no-any-return]
    raise ValueError(f"unknown operator {op}")


def _comparison(comparison: Comparison) -> ColumnElement[bool]:
    field = comparison.field
    if field.kind == "attributes":
        column = _ATTRIBUTE_COLUMNS[field.name]
        if field.name == "run_id" and comparison.op == "=" and isinstance(comparison.value, str):
            # a run id compares like the CLI resolves it: any unique prefix matches
            return column.like(comparison.value.replace("%", "").replace("_", "") + "%")  # type: ignore[no-any-return]
        return _compare(column, comparison)
    # uncorrelated "run id IN (runs having the key [and a matching value])": the database
    # answers it once from the (key, value) index instead of probing run by run
    table = _KEYED[field.kind]
    having_key = select(table.c.run_id).where(table.c.key == field.name)
    if comparison.op == "is_null":
        return runs.c.id.not_in(having_key)
    if comparison.op == "not_null":
        return runs.c.id.in_(having_key)
    # a run without the key never matches a comparison, as in MLflow
    return runs.c.id.in_(having_key.where(_compare(table.c.value, comparison)))


def compile_filter(tree: Filter | None) -> ColumnElement[bool]:
    """The SQL condition on ``runs`` (joined with ``experiments``) that ``tree`` describes."""
    if tree is None:
        return true()
    if isinstance(tree, Comparison):
        return _comparison(tree)
    if isinstance(tree, And):
        return and_(*(compile_filter(part) for part in tree.parts))
    if isinstance(tree, Or):
        return or_(false(), *(compile_filter(part) for part in tree.parts))
    if isinstance(tree, Not):
        return not_(compile_filter(tree.part))
    raise TypeError(f"not a filter: {tree!r}")


def order_by(query: Select[Any], keys: list[SortKey]) -> Select[Any]:
    """``query`` sorted by ``keys`` (missing values last), then newest first, then by id."""
    clauses: list[UnaryExpression[Any]] = []
    for index, key in enumerate(keys):
        column = _sort_column(query, key.field, index)
        if isinstance(column, tuple):
            query, column = column
        clauses.append(column.desc().nulls_last() if key.descending else column.asc().nulls_last())
    clauses.extend([runs.c.start_time.desc(), runs.c.id.asc()])
    return query.order_by(*clauses)


def _sort_column(query: Select[Any], field: Field, index: int) -> Any:
    if field.kind == "attributes":
        return _ATTRIBUTE_COLUMNS[field.name]
    table = _KEYED[field.kind].alias(f"sort_{index}")
    joined = query.outerjoin(table, and_(table.c.run_id == runs.c.id, table.c.key == field.name))
    return joined, table.c.value


def base_query() -> Select[Any]:
    """``SELECT runs.*, experiments.name FROM runs JOIN experiments``."""
    return select(runs, experiments.c.name.label("experiment_name")).join(
        experiments, experiments.c.id == runs.c.experiment_id
    )

"""Runs side by side: which params and metrics differ, and which run is best at each metric."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from molen.entities import RunRecord

__all__ = ["ComparedRow", "RunComparison", "compare_runs", "lower_is_better"]

_LOWER = re.compile(r"(loss|err|error|mse|rmse|mae|mape|logloss|perplexity|latency|time|cost)", re.I)


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better, guessed from its name (loss, rmse…)."""
    return _LOWER.search(metric) is not None


@dataclass(frozen=True)
class ComparedRow:
    """One field across runs: its values, whether they differ, and the best run's index."""

    field: str
    values: tuple[str | float | None, ...]
    differs: bool
    best: int | None = None


@dataclass(frozen=True)
class RunComparison:
    runs: tuple[RunRecord, ...]
    rows: tuple[ComparedRow, ...]


def _best(values: tuple[float | None, ...], lower: bool) -> int | None:
    candidates = [
        (value, index) for index, value in enumerate(values) if value is not None and not math.isnan(value)
    ]
    if len(candidates) < 2 or len({v for v, _ in candidates}) == 1:
        return None
    return (min(candidates) if lower else max(candidates, key=lambda c: (c[0], -c[1])))[1]


def compare_runs(records: list[RunRecord], *, lower: set[str] | None = None) -> RunComparison:
    """Compare runs field by field. ``lower`` names metrics where smaller is better
    (default: guessed from the name by :func:`lower_is_better`)."""
    rows: list[ComparedRow] = []

    def add(field: str, values: tuple[str | float | None, ...]) -> None:
        present = [v for v in values if v is not None]
        rows.append(ComparedRow(field, values, len(set(map(str, present))) > 1 or len(present) < len(values)))

    add("experiment", tuple(r.experiment for r in records))
    add("status", tuple(r.status for r in records))
    add("git.commit", tuple(r.tags.get("molen.git.commit", "")[:12] or None for r in records))
    add("git.dirty", tuple(r.tags.get("molen.git.dirty") for r in records))
    data = [
        ", ".join(f"{i.path}@{i.digest[:8]}" for i in r.inputs if i.role == "input") or None for r in records
    ]
    add("data", tuple(data))
    for key in sorted({k for r in records for k in r.params}):
        add(f"params.{key}", tuple(r.params.get(key) for r in records))
    for key in sorted({k for r in records for k in r.metrics}):
        values = tuple(r.metrics.get(key) for r in records)
        is_lower = key in lower if lower is not None else lower_is_better(key)
        present = [v for v in values if v is not None]
        differs = len({repr(v) for v in present}) > 1 or len(present) < len(values)
        rows.append(ComparedRow(f"metrics.{key}", values, differs, _best(values, is_lower)))
    return RunComparison(tuple(records), tuple(rows))

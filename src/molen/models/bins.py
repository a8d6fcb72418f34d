"""The binned reference a model carries for drift: computed once from its training data, never
again per report.

A numerical column is cut at its training deciles (right-closed bins, open at both ends, so every
future value has a bin); a categorical column keeps its most frequent training values plus one
"other" bin, where unseen categories land. The reference is the count per bin. Live data is
counted into the same bins, whether it arrives as a pandas column, a NumPy batch on the server
or an SQL aggregate over the prediction log (:meth:`Bins.sql_index`), so every drift statistic
is a comparison of two short count vectors.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, NamedTuple

__all__ = ["Bins", "bins_from_frame", "bins_from_profile", "column_bins"]

DECILES = tuple(q / 10 for q in range(1, 10))
TOP_VALUES = 50


class Bins(NamedTuple):
    """One column's bins and its reference counts (the last bin of a categorical column is
    "other")."""

    column: str
    kind: str  # "numerical" or "categorical"
    edges: tuple[float, ...]  # numerical: interior edges, right-closed bins
    values: tuple[str, ...]  # categorical: the known values
    reference: tuple[int, ...]  # count per bin

    @property
    def size(self) -> int:
        """The number of bins: one more than the edges (numbers) or the known values ("other")."""
        return len(self.edges) + 1 if self.kind == "numerical" else len(self.values) + 1

    def labels(self) -> list[str]:
        """A short name per bin, for plots and tables."""
        if self.kind == "categorical":
            return [*self.values, "other"]
        if not self.edges:
            return ["all"]
        edges = [f"{edge:.4g}" for edge in self.edges]
        middle = [f"{low}–{high}" for low, high in pairwise(edges)]
        return [f"≤{edges[0]}", *middle, f">{edges[-1]}"]

    def locate(self, column: Any) -> Any:
        """The bin of each non-missing value of ``column`` (pandas, NumPy or Arrow), as an int
        array; missing values are dropped."""
        import numpy as np
        import pandas as pd

        series = column if isinstance(column, pd.Series) else pd.Series(np.asarray(column))
        present = series.dropna()
        if self.kind == "numerical":
            values = present.to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            return np.searchsorted(np.asarray(self.edges, dtype=float), values, side="left")
        codes = pd.Index(list(self.values), dtype=object).get_indexer(present.astype(str))
        return np.where(codes < 0, len(self.values), codes)

    def count(self, column: Any) -> Any:
        """Counts per bin of ``column``."""
        import numpy as np

        return np.bincount(self.locate(column), minlength=self.size)

    def sql_index(self, expression: str) -> str:
        """A DuckDB expression giving the bin of ``expression`` (NULL for a missing value)."""
        if self.kind == "numerical":
            if not self.edges:
                return f"CASE WHEN {expression} IS NULL OR NOT isfinite({expression}) THEN NULL ELSE 0 END"
            terms = " + ".join(f"({expression} > {edge!r})::INTEGER" for edge in self.edges)
            return f"CASE WHEN {expression} IS NULL OR NOT isfinite({expression}) THEN NULL ELSE {terms} END"
        quoted = ", ".join("'" + value.replace("'", "''") + "'" for value in self.values)
        found = f"list_position([{quoted}]::VARCHAR[], CAST({expression} AS VARCHAR))"
        return f"CASE WHEN {expression} IS NULL THEN NULL ELSE coalesce({found} - 1, {len(self.values)}) END"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as stored in a model's ``profile.json``."""
        if self.kind == "numerical":
            return {"edges": list(self.edges), "counts": list(self.reference)}
        return {"values": list(self.values), "counts": list(self.reference)}


def column_bins(name: str, series: Any) -> Bins:
    """The bins of one reference column (pandas): deciles of numbers, top values of the rest."""
    import numpy as np

    kind = series.dtype.kind
    present = series.dropna()
    if kind in "iuf" and str(series.dtype) != "category":
        values = present.to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        edges = tuple(float(e) for e in np.unique(np.quantile(values, DECILES))) if values.size else ()
        bins = Bins(name, "numerical", edges, (), ())
        return bins._replace(reference=tuple(int(n) for n in bins.count(values)))
    frequencies = present.astype(str).value_counts()
    top = frequencies.iloc[:TOP_VALUES]
    counts = [int(n) for n in top.tolist()] + [int(frequencies.iloc[TOP_VALUES:].sum())]
    return Bins(name, "categorical", (), tuple(str(v) for v in top.index), tuple(counts))


def bins_from_frame(frame: Any, columns: list[str] | None = None) -> dict[str, Bins]:
    """The bins of every column (or of ``columns``) of a pandas frame; dates are skipped."""
    chosen = columns if columns is not None else [str(c) for c in frame.columns]
    return {name: column_bins(name, frame[name]) for name in chosen if frame[name].dtype.kind != "M"}


def _from_stats(name: str, stats: dict[str, Any]) -> Bins | None:
    found = stats.get("bins")
    if isinstance(found, dict) and "edges" in found:
        return Bins(name, "numerical", tuple(found["edges"]), (), tuple(found["counts"]))
    if isinstance(found, dict) and "values" in found:
        return Bins(name, "categorical", (), tuple(found["values"]), tuple(found["counts"]))
    if stats.get("kind") == "categorical" and "top" in stats:
        values = tuple(str(item["value"]) for item in stats["top"])
        counts = (*(int(item["count"]) for item in stats["top"]), int(stats.get("other", 0)))
        return Bins(name, "categorical", (), values, counts)
    return None


def bins_from_profile(profile: dict[str, Any]) -> dict[str, Bins]:
    """The bins stored in a model's ``profile.json``: one per feature, plus ``__prediction__``.
    A profile written before bins were stored gives none for its numerical features (the caller
    then bins the reference sample)."""
    found = {}
    for name, stats in (profile.get("features") or {}).items():
        bins = _from_stats(name, stats)
        if bins is not None:
            found[name] = bins
    if isinstance(profile.get("prediction"), dict):
        bins = _from_stats("__prediction__", profile["prediction"])
        if bins is not None:
            found["__prediction__"] = bins
    return found

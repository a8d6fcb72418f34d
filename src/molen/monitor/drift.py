"""Data drift between a reference and a current sample, per column and for the dataset.

The decision table (preset ``evidently``, the default, so teams moving from Evidently get the
same verdicts; see ``../shared/reference/drift-decision-table.md`` for its source):

==============  =========================================  ==============================  ===============
column          condition (n = reference rows after NaN)   method                          drift when
==============  =========================================  ==============================  ===============
numerical       n ≤ 1000, more than 5 distinct values      Kolmogorov–Smirnov p-value      p ≤ 0.05
numerical       n ≤ 1000, 3–5 distinct values               chi-squared p-value             p < 0.05
any             n ≤ 1000, at most 2 distinct values         two-proportion z-test p-value   p < 0.05
categorical     n ≤ 1000, more than 2 distinct values       chi-squared p-value             p < 0.05
numerical       n > 1000, more than 5 distinct values       Wasserstein distance / std      d ≥ 0.1
numerical       n > 1000, at most 5 distinct values         Jensen–Shannon distance         d ≥ 0.1
categorical     n > 1000                                    Jensen–Shannon distance         d ≥ 0.1
==============  =========================================  ==============================  ===============

Column types: floats are numerical; integers with at most 10 distinct values, booleans,
categories and text are categorical. The population stability index (PSI) is reported for every
column beside its test. The dataset drifts when the share of drifted columns reaches
``drift_share`` (0.5). Thresholds can be changed per method (``thresholds``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from molen.errors import InvalidValueError

__all__ = ["ColumnDrift", "DriftReport", "drift_report"]

DEFAULT_THRESHOLDS = {"ks": 0.05, "chisquare": 0.05, "z": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1}
P_VALUE_METHODS = {"ks", "chisquare", "z"}


class ColumnDrift(NamedTuple):
    """One column's verdict."""

    column: str
    kind: str
    method: str
    statistic: float
    threshold: float
    drifted: bool
    psi: float
    reference_rows: int
    current_rows: int


class DriftReport(NamedTuple):
    """Per-column results and the dataset's verdict."""

    columns: list[ColumnDrift]
    drifted_share: float
    drift_share: float
    dataset_drift: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "dataset_drift": self.dataset_drift,
            "drifted_share": self.drifted_share,
            "drift_share": self.drift_share,
            "columns": [column._asdict() for column in self.columns],
        }


def _clean(series: Any) -> Any:
    import numpy as np

    if series.dtype.kind in "fc":
        series = series.replace([np.inf, -np.inf], np.nan)
    return series.dropna()


def column_kind(series: Any) -> str:
    """``numerical`` or ``categorical``, by the table's rules."""
    kind = series.dtype.kind
    if kind == "f":
        return "numerical"
    if kind in "iu":
        return "categorical" if series.nunique() <= 10 else "numerical"
    return "categorical"


def _frequencies(reference: Any, current: Any) -> tuple[Any, Any]:
    """Shares of each value (both sides over the union of values)."""
    import numpy as np

    levels = sorted(set(reference.unique().tolist()) | set(current.unique().tolist()), key=str)
    ref_counts = reference.value_counts()
    cur_counts = current.value_counts()
    ref = np.array([ref_counts.get(level, 0) for level in levels], dtype=float)
    cur = np.array([cur_counts.get(level, 0) for level in levels], dtype=float)
    return ref, cur


def _binned(reference: Any, current: Any, kind: str) -> tuple[Any, Any]:
    """Shares per bin: equal-width Sturges bins over both sides for numerical columns with more
    than 20 distinct reference values, else per value."""
    import numpy as np

    if kind == "numerical" and reference.nunique() > 20:
        both = np.concatenate([reference.to_numpy(dtype=float), current.to_numpy(dtype=float)])
        edges = np.histogram_bin_edges(both, bins="sturges")
        ref = np.histogram(reference.to_numpy(dtype=float), bins=edges)[0].astype(float)
        cur = np.histogram(current.to_numpy(dtype=float), bins=edges)[0].astype(float)
    else:
        ref, cur = _frequencies(reference, current)
    return ref / max(ref.sum(), 1.0), cur / max(cur.sum(), 1.0)


def _psi(reference: Any, current: Any, kind: str) -> float:
    import numpy as np

    ref, cur = _binned(reference, current, kind)
    smallest = min([share for share in (*ref, *cur) if share > 0] or [1e-4])
    fill = 1e-4 if smallest > 1e-4 else smallest / 1e6
    ref = np.where(ref == 0, fill, ref)
    cur = np.where(cur == 0, fill, cur)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _test(method: str, reference: Any, current: Any, kind: str) -> float:
    import numpy as np
    from scipy import stats
    from scipy.spatial import distance

    if method == "ks":
        return float(stats.ks_2samp(reference.to_numpy(dtype=float), current.to_numpy(dtype=float)).pvalue)
    if method == "wasserstein":
        ref = reference.to_numpy(dtype=float)
        return float(stats.wasserstein_distance(ref, current.to_numpy(dtype=float)) / max(np.std(ref), 0.001))
    if method == "jensenshannon":
        ref, cur = _binned(reference, current, kind)
        return float(distance.jensenshannon(ref, cur))
    if method == "chisquare":
        ref, cur = _frequencies(reference, current)
        expected = ref * (cur.sum() / max(ref.sum(), 1.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(stats.chisquare(f_obs=cur, f_exp=expected).pvalue)
    if method == "z":
        levels = sorted(set(reference.unique().tolist()) | set(current.unique().tolist()), key=str)
        if len(levels) <= 1:
            return 1.0
        first = levels[0]
        p1, p2 = float((reference == first).mean()), float((current == first).mean())
        n1, n2 = len(reference), len(current)
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        if spread == 0:
            return 1.0
        return float(2 * stats.norm.sf(abs(p1 - p2) / spread))
    raise InvalidValueError(f"unknown drift method {method!r}")


def choose_method(kind: str, reference_rows: int, distinct: int) -> str:
    """The method the decision table picks."""
    if reference_rows <= 1000:
        if distinct <= 2:
            return "z"
        if kind == "categorical" or distinct <= 5:
            return "chisquare"
        return "ks"
    if kind == "numerical" and distinct > 5:
        return "wasserstein"
    return "jensenshannon"


def drift_report(
    reference: Any,
    current: Any,
    *,
    columns: list[str] | None = None,
    thresholds: dict[str, float] | None = None,
    drift_share: float = 0.5,
) -> DriftReport:
    """Drift of every column shared by ``reference`` and ``current`` (pandas, polars or Arrow
    frames), with no model or log needed.

    Example::

        report = molen.drift_report(train_df, last_week_df)
        report.dataset_drift, [c.column for c in report.columns if c.drifted]
    """
    from molen.models.signature import to_pandas

    ref_frame, cur_frame = to_pandas(reference, None), to_pandas(current, None)
    chosen = columns or [name for name in ref_frame.columns if name in set(cur_frame.columns)]
    missing = [name for name in chosen if name not in ref_frame.columns or name not in cur_frame.columns]
    if missing:
        raise InvalidValueError(f"column {missing[0]!r} is not in both frames")
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    results = []
    for name in chosen:
        if ref_frame[name].dtype.kind == "M":
            continue  # dates are not tested
        ref, cur = _clean(ref_frame[name]), _clean(cur_frame[name])
        if not len(ref) or not len(cur):
            continue
        kind = column_kind(ref_frame[name])
        distinct = len(set(ref.unique().tolist()) | set(cur.unique().tolist()))
        method = choose_method(kind, len(ref), distinct)
        statistic = _test(method, ref, cur, kind)
        threshold = limits[method]
        if method in P_VALUE_METHODS:
            drifted = statistic <= threshold if method == "ks" else statistic < threshold
        else:
            drifted = statistic >= threshold
        results.append(
            ColumnDrift(
                str(name),
                kind,
                method,
                statistic,
                threshold,
                bool(drifted),
                _psi(ref, cur, kind),
                len(ref),
                len(cur),
            )
        )
    share = sum(result.drifted for result in results) / len(results) if results else 0.0
    return DriftReport(results, share, drift_share, bool(results) and share >= drift_share)

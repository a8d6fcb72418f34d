"""Data drift between a reference and a current sample, per column and for the dataset.

Two decision tables, chosen by ``preset``.

``molen`` (the default) compares the current data with the binned reference a model carries
(:mod:`molen.models.bins`: training deciles of numbers, top values of categories, computed once
when the model is logged), so the reference side is never recomputed and live data is only
counted into bins, by pandas, on the server or in SQL over the prediction log:

=====================  ========================================  ===============
current rows (n)       method on the bin counts                  drift when
=====================  ========================================  ===============
n ≤ 1000               chi-squared p-value, 2 × k table          p < 0.05
n > 1000               Jensen–Shannon distance (natural log)     d ≥ 0.1
=====================  ========================================  ===============

Why not Evidently's table by default: its tests need the raw reference (a 5,000-row sample at
most, once a model is stored), its Wasserstein rule flags a shift of a tenth of a standard
deviation, which at production volumes alarms on noise people learn to ignore, and it cannot be
updated batch by batch. A test on bins can: it is what the server exports as gauges and what the
per-day timeline computes over millions of logged rows. The chi-squared test compares the two
count vectors as a 2 × k table (the training data is a sample too: treating its shares as exact
would flag about one steady window in five at 1,000 rows against a 2,000-row reference instead
of one in twenty); bins expected to hold fewer than 5 rows are pooled first, as the test
requires.

``evidently`` reproduces Evidently's default decision table on raw samples, so a team moving from
Evidently gets the same verdicts (see ``../shared/reference/drift-decision-table.md``):

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

Column types there: floats are numerical; integers with at most 10 distinct values, booleans,
categories and text are categorical.

Both: the population stability index (PSI) is reported for every column beside its test (on
the reference deciles for ``molen``, the usual definition), and the dataset drifts when the
share of drifted columns reaches ``drift_share`` (0.5). Thresholds can be changed per method and
per column, from Python or in ``molen.yaml`` (:class:`DriftConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.errors import InvalidValueError

if TYPE_CHECKING:
    from molen.models.bins import Bins

__all__ = ["PRESETS", "ColumnDrift", "DriftConfig", "DriftReport", "compare_counts", "drift_report"]

#: Default thresholds per method, by preset.
PRESETS: dict[str, dict[str, float]] = {
    "molen": {"chisquare": 0.05, "jensenshannon": 0.1},
    "evidently": {"ks": 0.05, "chisquare": 0.05, "z": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1},
}
P_VALUE_METHODS = {"ks", "chisquare", "z"}
#: The sample size where both tables move from a test to a distance.
SMALL_SAMPLE = 1000


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
    labels: tuple[str, ...] = ()
    reference_share: tuple[float, ...] = ()
    current_share: tuple[float, ...] = ()


class DriftReport(NamedTuple):
    """Per-column results and the dataset's verdict."""

    columns: list[ColumnDrift]
    drifted_share: float
    drift_share: float
    dataset_drift: bool
    preset: str = "molen"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "preset": self.preset,
            "dataset_drift": self.dataset_drift,
            "drifted_share": self.drifted_share,
            "drift_share": self.drift_share,
            "columns": [column._asdict() for column in self.columns],
        }

    def html(self) -> str:
        """The report as one offline HTML page with a plot per drifted column."""
        from molen.monitor.html import drift_html

        return drift_html(self)


@dataclass(frozen=True)
class DriftConfig:
    """How drift is judged: the ``monitor.drift`` section of ``molen.yaml``::

    monitor:
      drift:
        preset: molen          # or evidently
        drift_share: 0.5       # share of drifted features that makes the dataset drift
        thresholds: {jensenshannon: 0.15}
        columns: {monthly_charges: 0.2}   # one column's own threshold
    """

    preset: str = "molen"
    drift_share: float = 0.5
    thresholds: dict[str, float] = field(default_factory=dict)
    columns: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DriftConfig:
        """The settings of a parsed ``molen.yaml`` (defaults where it says nothing)."""
        section = (config.get("monitor") or {}).get("drift") or {}
        if not isinstance(section, dict):
            raise InvalidValueError("molen.yaml: monitor.drift must be a mapping (preset:, thresholds:, …)")
        preset = str(section.get("preset", "molen"))
        if preset not in PRESETS:
            raise InvalidValueError(
                f"molen.yaml: monitor.drift.preset {preset!r} is unknown; use one of {', '.join(PRESETS)}"
            )
        thresholds = _numbers(section.get("thresholds"), "monitor.drift.thresholds")
        unknown = sorted(set(thresholds) - set(PRESETS[preset]))
        if unknown:
            raise InvalidValueError(
                f"molen.yaml: monitor.drift.thresholds: {unknown[0]!r} is not a method of preset {preset} "
                f"({', '.join(PRESETS[preset])})"
            )
        share = _numbers({"drift_share": section.get("drift_share", 0.5)}, "monitor.drift")["drift_share"]
        return cls(preset, share, thresholds, _numbers(section.get("columns"), "monitor.drift.columns"))


def _numbers(section: Any, where: str) -> dict[str, float]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise InvalidValueError(f"molen.yaml: {where} must be a mapping of names to numbers")
    found = {}
    for key, value in section.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValueError(f"molen.yaml: {where}.{key} must be a number, not {value!r}")
        found[str(key)] = float(value)
    return found


def _drifted(method: str, statistic: float, threshold: float) -> bool:
    if method == "ks":
        return statistic <= threshold
    if method in P_VALUE_METHODS:
        return statistic < threshold
    return statistic >= threshold


def _psi_shares(ref: Any, cur: Any) -> float:
    import numpy as np

    smallest = min([share for share in (*ref, *cur) if share > 0] or [1e-4])
    fill = 1e-4 if smallest > 1e-4 else smallest / 1e6
    ref = np.where(ref == 0, fill, ref)
    cur = np.where(cur == 0, fill, cur)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _pooled_chisquare(reference: Any, current: Any) -> float:
    """Chi-squared test that the ``reference`` and ``current`` counts per bin come from one
    distribution (a 2 × k table: the reference is a sample too, so its own noise is allowed
    for). Bins expected to hold fewer than 5 rows on either side are pooled, and the pool joins
    the smallest bin when it is still under 5."""
    import numpy as np
    from scipy import stats

    table = np.vstack([reference, current]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    expected = table.sum(axis=0) * (table.sum(axis=1).min() / table.sum())
    small = expected < 5
    kept = table[:, ~small]
    if small.any():
        pool = table[:, small].sum(axis=1, keepdims=True)
        if pool.sum() * (table.sum(axis=1).min() / table.sum()) < 5 and kept.shape[1]:
            smallest = int(np.argmin(kept.sum(axis=0)))
            kept = kept.copy()
            kept[:, smallest] += pool[:, 0]
        else:
            kept = np.hstack([kept, pool])
    if kept.shape[1] < 2 or (kept.sum(axis=1) == 0).any():
        return 1.0
    return float(stats.chi2_contingency(kept, correction=False).pvalue)


def compare_counts(
    bins: Bins, current: Any, *, thresholds: dict[str, float] | None = None, threshold: float | None = None
) -> ColumnDrift:
    """The ``molen`` preset's verdict on one column: ``current`` counts per bin of ``bins``."""
    import numpy as np
    from scipy.spatial import distance

    counts = np.asarray(current, dtype=float)
    reference = np.asarray(bins.reference, dtype=float)
    ref_share = reference / max(reference.sum(), 1.0)
    cur_share = counts / max(counts.sum(), 1.0)
    rows = int(counts.sum())
    if rows <= SMALL_SAMPLE:
        method, statistic = "chisquare", _pooled_chisquare(reference, counts)
    else:
        method, statistic = "jensenshannon", float(distance.jensenshannon(ref_share, cur_share))
    limit = threshold if threshold is not None else {**PRESETS["molen"], **(thresholds or {})}[method]
    return ColumnDrift(
        bins.column,
        bins.kind,
        method,
        statistic,
        limit,
        _drifted(method, statistic, limit),
        _psi_shares(ref_share, cur_share),
        int(reference.sum()),
        rows,
        tuple(bins.labels()),
        tuple(float(x) for x in ref_share),
        tuple(float(x) for x in cur_share),
    )


def summarize(results: list[ColumnDrift], drift_share: float, preset: str) -> DriftReport:
    """The dataset's verdict from its columns'."""
    share = sum(result.drifted for result in results) / len(results) if results else 0.0
    return DriftReport(results, share, drift_share, bool(results) and share >= drift_share, preset)


def _clean(series: Any) -> Any:
    import numpy as np

    if series.dtype.kind in "fc":
        series = series.replace([np.inf, -np.inf], np.nan)
    return series.dropna()


def column_kind(series: Any) -> str:
    """``numerical`` or ``categorical``, by Evidently's rules."""
    kind = series.dtype.kind
    if kind == "f":
        return "numerical"
    if kind in "iu":
        return "categorical" if series.nunique() <= 10 else "numerical"
    return "categorical"


def _frequencies(reference: Any, current: Any) -> tuple[Any, Any, list[str]]:
    """Counts of each value (both sides over the union of values)."""
    import numpy as np
    import pandas as pd

    ref_counts = reference.value_counts()
    cur_counts = current.value_counts()
    levels = sorted(set(ref_counts.index.tolist()) | set(cur_counts.index.tolist()), key=str)
    index = pd.Index(levels, dtype=object)
    ref = ref_counts.reindex(index, fill_value=0).to_numpy(dtype=float)
    cur = cur_counts.reindex(index, fill_value=0).to_numpy(dtype=float)
    return np.asarray(ref), np.asarray(cur), [str(level) for level in levels]


def _binned(reference: Any, current: Any, kind: str, ref_distinct: int) -> tuple[Any, Any, list[str]]:
    """Shares per bin and the bins' names: equal-width Sturges bins over both sides for
    numerical columns with more than 20 distinct reference values, else per value."""
    import numpy as np

    if kind == "numerical" and ref_distinct > 20:
        ref_values, cur_values = reference.to_numpy(dtype=float), current.to_numpy(dtype=float)
        edges = np.histogram_bin_edges(np.concatenate([ref_values, cur_values]), bins="sturges")
        span = (float(edges[0]), float(edges[-1]))  # equal widths: NumPy's fast path, no sort
        ref = np.histogram(ref_values, bins=len(edges) - 1, range=span)[0].astype(float)
        cur = np.histogram(cur_values, bins=len(edges) - 1, range=span)[0].astype(float)
        labels = [f"{low:.4g}–{high:.4g}" for low, high in pairwise(edges)]
    else:
        ref, cur, labels = _frequencies(reference, current)
    return ref / max(ref.sum(), 1.0), cur / max(cur.sum(), 1.0), labels


def _wasserstein(u: Any, v: Any) -> float:
    """The first Wasserstein distance of two samples: the area between their distribution
    functions, as SciPy's ``wasserstein_distance`` computes it, with cheaper steps: each side
    sorted once, the two sorted runs merged by NumPy's stable sort in one pass, and both
    distribution functions read off the merge with a running count (no binary searches)."""
    import numpy as np

    u, v = (side if np.all(side[:-1] <= side[1:]) else np.sort(side) for side in (u, v))
    both = np.concatenate([u, v])
    order = np.argsort(both, kind="stable")
    values = both[order]
    from_u = order < len(u)
    u_cdf = np.cumsum(from_u)[:-1] / len(u)
    v_cdf = np.cumsum(~from_u)[:-1] / len(v)
    return float(np.sum(np.abs(u_cdf - v_cdf) * np.diff(values)))


def _test(method: str, reference: Any, current: Any, shares: tuple[Any, Any, list[str]]) -> float:
    import numpy as np
    from scipy import stats
    from scipy.spatial import distance

    if method == "ks":
        return float(stats.ks_2samp(reference.to_numpy(dtype=float), current.to_numpy(dtype=float)).pvalue)
    if method == "wasserstein":
        ref = reference.to_numpy(dtype=float)
        return _wasserstein(ref, current.to_numpy(dtype=float)) / max(float(np.std(ref)), 0.001)
    if method == "jensenshannon":
        return float(distance.jensenshannon(shares[0], shares[1]))
    if method == "chisquare":
        ref, cur, _ = _frequencies(reference, current)
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
    """The method Evidently's table picks."""
    if reference_rows <= SMALL_SAMPLE:
        if distinct <= 2:
            return "z"
        if kind == "categorical" or distinct <= 5:
            return "chisquare"
        return "ks"
    if kind == "numerical" and distinct > 5:
        return "wasserstein"
    return "jensenshannon"


def evidently_column(name: str, reference: Any, current: Any, limits: dict[str, float]) -> ColumnDrift | None:
    """One column by Evidently's default table (None for a date or an empty side)."""
    import numpy as np
    import pandas as pd

    if reference.dtype.kind == "M":
        return None
    ref, cur = _clean(reference), _clean(current)
    if not len(ref) or not len(cur):
        return None
    kind = column_kind(reference)
    if reference.dtype.kind == "f":  # sorted once here: distinct values and every test reuse it
        ref = pd.Series(np.sort(ref.to_numpy(dtype=float)))
        cur = pd.Series(np.sort(cur.to_numpy(dtype=float)))
        ref_distinct = 1 + int(np.count_nonzero(np.diff(ref.to_numpy())))
    else:
        ref_distinct = int(ref.nunique())
    distinct = ref_distinct if ref_distinct > 10 else int(pd.concat([ref, cur], ignore_index=True).nunique())
    method = choose_method(kind, len(ref), distinct)
    shares = _binned(ref, cur, kind, ref_distinct)
    statistic = _test(method, ref, cur, shares)
    threshold = limits.get(name, limits[method])
    return ColumnDrift(
        name,
        kind,
        method,
        statistic,
        threshold,
        _drifted(method, statistic, threshold),
        _psi_shares(shares[0], shares[1]),
        len(ref),
        len(cur),
        tuple(shares[2]),
        tuple(float(x) for x in shares[0]),
        tuple(float(x) for x in shares[1]),
    )


def drift_report(
    reference: Any,
    current: Any,
    *,
    columns: list[str] | None = None,
    preset: str = "molen",
    thresholds: dict[str, float] | None = None,
    drift_share: float = 0.5,
) -> DriftReport:
    """Drift of every column shared by ``reference`` and ``current`` (pandas, polars or Arrow
    frames), with no model or log needed. With the ``molen`` preset ``reference`` may also be
    the bins of a model's profile (:func:`molen.models.bins.bins_from_profile`). ``thresholds``
    maps a method or a column name to its threshold.

    Example::

        report = molen.drift_report(train_df, last_week_df)
        report.dataset_drift, [c.column for c in report.columns if c.drifted]
        Path("drift.html").write_text(report.html())
    """
    from molen.models.signature import to_pandas

    if preset not in PRESETS:
        raise InvalidValueError(f"drift preset {preset!r} is unknown; use one of {', '.join(PRESETS)}")
    cur_frame = to_pandas(current, None)
    given_bins = isinstance(reference, dict) and all(hasattr(b, "sql_index") for b in reference.values())
    if given_bins and preset != "molen":
        raise InvalidValueError(
            "binned references work with preset 'molen'; pass the reference frame instead"
        )
    ref_frame = None if given_bins else to_pandas(reference, None)
    ref_names = list(reference) if given_bins else [str(c) for c in ref_frame.columns]  # type: ignore[union-attr]
    chosen = columns or [name for name in ref_names if name in set(cur_frame.columns)]
    missing = [name for name in chosen if name not in ref_names or name not in cur_frame.columns]
    if missing:
        raise InvalidValueError(f"column {missing[0]!r} is not in both frames")
    limits = {**PRESETS[preset], **(thresholds or {})}
    results: list[ColumnDrift] = []
    if preset == "evidently":
        for name in chosen:
            found = evidently_column(name, ref_frame[name], cur_frame[name], limits)  # type: ignore[index]
            if found is not None:
                results.append(found)
    else:
        from molen.models.bins import bins_from_frame

        bins = reference if given_bins else bins_from_frame(ref_frame, chosen)
        for name in chosen:
            if name not in bins or cur_frame[name].dtype.kind == "M":
                continue
            counts = bins[name].count(cur_frame[name])
            if counts.sum() and sum(bins[name].reference):
                results.append(
                    compare_counts(bins[name], counts, thresholds=limits, threshold=limits.get(name))
                )
    return summarize(results, drift_share, preset)

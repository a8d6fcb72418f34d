"""Data drift: the decision table's method per column, its statistics against SciPy's, verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

import molen
from molen.errors import InvalidValueError
from molen.monitor.drift import choose_method


def frame(rows: int, *, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plans = ["basic", "pro", "max"]
    weights = [0.5, 0.3, 0.2] if shift == 0 else [0.2, 0.3, 0.5]
    return pd.DataFrame(
        {
            "charges": rng.normal(70 + 10 * shift, 20, rows),
            "calls": rng.integers(0, 4, rows).astype(float),
            "tenure": rng.integers(0, 72, rows),
            "plan": rng.choice(plans, rows, p=weights),
            "flag": rng.choice([True, False], rows),
            "steady": rng.normal(0, 1, rows),
        }
    )


@pytest.mark.parametrize(
    ("kind", "rows", "distinct", "method"),
    [
        ("numerical", 1000, 50, "ks"),
        ("numerical", 1000, 4, "chisquare"),
        ("numerical", 500, 2, "z"),
        ("categorical", 800, 3, "chisquare"),
        ("categorical", 800, 2, "z"),
        ("numerical", 1001, 50, "wasserstein"),
        ("numerical", 5000, 5, "jensenshannon"),
        ("categorical", 5000, 2, "jensenshannon"),
    ],
)
def test_the_decision_table(kind: str, rows: int, distinct: int, method: str) -> None:
    assert choose_method(kind, rows, distinct) == method


def test_small_samples_use_p_values_matching_scipy() -> None:
    reference, current = frame(800), frame(700, shift=1.0, seed=1)
    report = molen.drift_report(reference, current)
    by_name = {c.column: c for c in report.columns}
    assert by_name["charges"].method == "ks"
    assert by_name["charges"].statistic == pytest.approx(
        stats.ks_2samp(reference["charges"], current["charges"]).pvalue
    )
    assert by_name["charges"].drifted and by_name["plan"].drifted and not by_name["steady"].drifted
    assert by_name["plan"].method == "chisquare" and by_name["flag"].method == "z"
    assert by_name["tenure"].kind == "numerical" and by_name["calls"].method == "chisquare"


def test_large_samples_use_distances() -> None:
    reference, current = frame(5000), frame(5000, shift=1.0, seed=1)
    report = molen.drift_report(reference, current)
    by_name = {c.column: c for c in report.columns}
    expected = stats.wasserstein_distance(reference["charges"], current["charges"]) / np.std(
        reference["charges"]
    )
    assert by_name["charges"].method == "wasserstein" and by_name["charges"].statistic == pytest.approx(
        expected
    )
    ref = reference["plan"].value_counts(normalize=True).reindex(["basic", "max", "pro"]).to_numpy()
    cur = current["plan"].value_counts(normalize=True).reindex(["basic", "max", "pro"]).to_numpy()
    assert by_name["plan"].statistic == pytest.approx(distance.jensenshannon(ref, cur))
    assert {c.column for c in report.columns if c.drifted} == {"charges", "plan"}
    assert report.drifted_share == pytest.approx(2 / 6) and not report.dataset_drift
    assert all(c.psi >= 0 for c in report.columns) and by_name["charges"].psi > by_name["steady"].psi


def test_no_drift_between_samples_of_one_distribution() -> None:
    report = molen.drift_report(frame(5000), frame(5000, seed=7))
    assert not [c.column for c in report.columns if c.drifted] and report.drifted_share == 0.0


def test_thresholds_share_and_bad_columns() -> None:
    reference, current = frame(5000), frame(5000, shift=1.0, seed=1)
    strict = molen.drift_report(reference, current, thresholds={"wasserstein": 10.0}, drift_share=0.1)
    assert not {c.column: c for c in strict.columns}["charges"].drifted and strict.dataset_drift
    with pytest.raises(InvalidValueError, match="not in both frames"):
        molen.drift_report(reference, current, columns=["nope"])
    as_polars = molen.drift_report(pytest.importorskip("polars").from_pandas(reference), current)
    assert as_polars.to_dict()["columns"][0]["column"] == "charges"

"""Data drift: both decision tables' methods per column, their statistics against SciPy's, verdicts,
the bins (in Python and in SQL) and the settings of molen.yaml."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

import molen
from molen.errors import InvalidValueError
from molen.models.bins import bins_from_frame
from molen.monitor.drift import DriftConfig, choose_method, compare_counts


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
    report = molen.drift_report(reference, current, preset="evidently")
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
    report = molen.drift_report(reference, current, preset="evidently")
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
    report = molen.drift_report(frame(5000), frame(5000, seed=7), preset="evidently")
    assert not [c.column for c in report.columns if c.drifted] and report.drifted_share == 0.0


def test_thresholds_share_and_bad_columns() -> None:
    reference, current = frame(5000), frame(5000, shift=1.0, seed=1)
    strict = molen.drift_report(
        reference, current, preset="evidently", thresholds={"wasserstein": 10.0}, drift_share=0.1
    )
    assert not {c.column: c for c in strict.columns}["charges"].drifted and strict.dataset_drift
    with pytest.raises(InvalidValueError, match="not in both frames"):
        molen.drift_report(reference, current, columns=["nope"])
    as_polars = molen.drift_report(pytest.importorskip("polars").from_pandas(reference), current)
    assert as_polars.to_dict()["columns"][0]["column"] == "charges"


# -- the molen preset: tests on the reference's bins ---------------------------------------------


def test_large_samples_use_the_jensen_shannon_distance_on_reference_deciles() -> None:
    reference, current = frame(5000), frame(5000, shift=1.0, seed=1)
    report = molen.drift_report(reference, current)
    by_name = {c.column: c for c in report.columns}
    edges = np.unique(np.quantile(reference["charges"], np.arange(1, 10) / 10))
    ref = np.bincount(np.searchsorted(edges, reference["charges"]), minlength=10) / 5000
    cur = np.bincount(np.searchsorted(edges, current["charges"]), minlength=10) / 5000
    assert by_name["charges"].method == "jensenshannon"
    assert by_name["charges"].statistic == pytest.approx(distance.jensenshannon(ref, cur))
    assert by_name["charges"].psi == pytest.approx(float(np.sum((cur - ref) * np.log(cur / ref))))
    assert {c.column for c in report.columns if c.drifted} == {"charges", "plan"}
    assert report.preset == "molen" and len(by_name["charges"].labels) == 10
    assert sum(by_name["plan"].current_share) == pytest.approx(1.0)
    steady = molen.drift_report(frame(5000), frame(5000, seed=7))
    assert not [c.column for c in steady.columns if c.drifted]


def test_small_samples_use_chi_squared_with_small_bins_pooled() -> None:
    reference, current = frame(5000), frame(300, shift=1.0, seed=1)
    report = molen.drift_report(reference, current)
    by_name = {c.column: c for c in report.columns}
    bins = bins_from_frame(reference)["charges"]
    table = np.vstack([bins.reference, bins.count(current["charges"])])
    assert (table.sum(axis=0) * 300 / 5300 >= 5).all()  # deciles of 300 rows: nothing to pool
    assert by_name["charges"].method == "chisquare"
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert by_name["charges"].statistic == pytest.approx(expected)
    assert by_name["charges"].drifted and by_name["plan"].drifted and not by_name["steady"].drifted
    assert not molen.drift_report(frame(5000), frame(300, seed=3)).dataset_drift
    # a rare level (expected under 5 rows) is pooled rather than let one row decide
    rare = pd.DataFrame({"plan": ["basic"] * 4990 + ["gold"] * 10})
    one_gold = pd.DataFrame({"plan": ["basic"] * 99 + ["gold"]})
    assert not molen.drift_report(rare, one_gold).columns[0].drifted


def test_steady_small_windows_are_rarely_flagged() -> None:
    """The reference is a sample too: 200 steady 1,000-row windows against 2,000 reference rows
    are flagged at about the nominal 5 % (treating the reference as exact flags ~20 %)."""
    bins = bins_from_frame(frame(2000))
    flagged = 0
    for seed in range(200):
        current = frame(1000, seed=100 + seed)
        flagged += compare_counts(bins["charges"], bins["charges"].count(current["charges"])).drifted
    assert flagged / 200 <= 0.08


def test_values_beyond_the_training_maximum_have_a_bin() -> None:
    reference = pd.DataFrame({"calls": np.arange(2000) % 6})  # top decile = maximum
    bins = bins_from_frame(reference)["calls"]
    assert bins.size == len(bins.reference) == len(bins.labels()) == len(bins.edges) + 1
    assert list(bins.count(pd.Series([0, 3, 5, 6, 40]))) == [1, 0, 0, 1, 0, 1, 2]
    assert molen.drift_report(reference, pd.DataFrame({"calls": np.full(500, 9)})).columns[0].drifted


def test_unseen_values_land_in_other_and_infinities_are_dropped() -> None:
    reference = pd.DataFrame({"plan": ["basic", "pro"] * 50, "x": np.arange(100.0)})
    bins = bins_from_frame(reference)
    assert list(bins["plan"].count(pd.Series(["pro", "gold", None, "basic"]))) == [1, 1, 1]
    assert bins["plan"].labels() == ["basic", "pro", "other"]
    assert bins["x"].count(pd.Series([-5.0, 1e9, np.inf, np.nan])).sum() == 2
    assert bins["x"].labels()[0].startswith("≤") and bins["x"].labels()[-1].startswith(">")


def test_bins_in_sql_agree_with_bins_in_python() -> None:
    duckdb = pytest.importorskip("duckdb")
    reference = pd.DataFrame(
        {"x": np.random.default_rng(0).normal(0, 1, 1000), "plan": ["a", "b", "it's"] * 333 + ["a"]}
    )
    bins = bins_from_frame(reference)
    current = pd.DataFrame(
        {"x": [-9.0, 0.0, 0.1, np.nan, np.inf, 9.0] * 2, "plan": ["a", "it's", "zz", None, "b", "a"] * 2}
    )
    connection = duckdb.connect()
    connection.register("current", current)
    for name in ("x", "plan"):
        rows = connection.execute(f"SELECT {bins[name].sql_index(name)} AS k FROM current").fetchall()
        from_sql = np.bincount([k for (k,) in rows if k is not None], minlength=bins[name].size)
        assert list(from_sql) == list(bins[name].count(current[name])), name


def test_a_binned_reference_gives_the_same_report_as_its_frame() -> None:
    reference, current = frame(5000), frame(2000, shift=1.0, seed=1)
    assert molen.drift_report(bins_from_frame(reference), current) == molen.drift_report(reference, current)
    with pytest.raises(InvalidValueError, match="preset 'molen'"):
        molen.drift_report(bins_from_frame(reference), current, preset="evidently")
    with pytest.raises(InvalidValueError, match="preset 'nannyml' is unknown"):
        molen.drift_report(reference, current, preset="nannyml")


def test_thresholds_per_method_and_per_column() -> None:
    reference, current = frame(5000), frame(5000, shift=1.0, seed=1)
    lenient = molen.drift_report(reference, current, thresholds={"jensenshannon": 0.9})
    assert not [c.column for c in lenient.columns if c.drifted]
    one = molen.drift_report(reference, current, thresholds={"charges": 0.9})
    assert {c.column for c in one.columns if c.drifted} == {"plan"}


def test_drift_settings_from_molen_yaml() -> None:
    assert DriftConfig.from_config({}) == DriftConfig()
    found = DriftConfig.from_config(
        {"monitor": {"drift": {"preset": "evidently", "drift_share": 0.3, "thresholds": {"ks": 0.01}}}}
    )
    assert found == DriftConfig("evidently", 0.3, {"ks": 0.01}, {})
    for section, message in [
        ({"preset": "nope"}, "preset 'nope' is unknown"),
        ({"thresholds": {"ks": 0.1}}, "'ks' is not a method of preset molen"),
        ({"columns": {"age": "high"}}, "monitor.drift.columns.age must be a number"),
        ({"drift_share": True}, "must be a number"),
        ("evidently", "must be a mapping"),
    ]:
        with pytest.raises(InvalidValueError, match=message):
            DriftConfig.from_config({"monitor": {"drift": section}})


def test_the_drift_report_renders_offline_html() -> None:
    page = molen.drift_report(frame(5000), frame(5000, shift=1.0, seed=1)).html()
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert page.count("data:image/png;base64,") == 2  # the two drifted columns
    assert "charges" in page and "jensenshannon" in page

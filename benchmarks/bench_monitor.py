"""Monitoring benchmark: molen's drift against Evidently's in the same run, the prediction-log
summary at ten million rows, and tree explanations against SHAP called directly.

Usage::

    .venv/bin/python benchmarks/bench_monitor.py [--quick] [--only drift|scale|log|explain] [--keep]

Data: seeded, 20 columns (``num_0`` … ``num_14`` normal floats, ``cat_0`` … ``cat_4`` strings
with 4 to 8 levels), drift injected in the current side's ``num_0`` (mean + 0.5 sd), ``num_1``
(sd × 1.5) and ``cat_0`` (level shares changed), as in the issue's measurement.

1. ``drift``: 100,000 × 20 reference against 100,000 × 20 current. Evidently 0.7's default
   ``DataDriftPreset`` runs in its own venv (``benchmarks/evidently_drift_peer.py``, built by
   ``benchmarks/peers.py evidently``), timed inside that process (CPU and wall seconds of the
   report and its results, reading the files not timed). molen is timed in this process on
   the same Parquet files, after one warm-up: ``molen.drift_report(ref, cur,
   preset="evidently")`` (Evidently's decision table on raw samples) and the default preset on
   the reference's bins (computed once, as ``log_model`` does; the binning is reported apart).
   Target: molen at least 20× faster than Evidently (CPU seconds, medians), with the same
   per-column verdicts under the ``evidently`` preset (agreement reported).
2. ``scale``: 1,000,000 × 20 current against the binned reference: target under 5 s, with the
   peak memory the call allocates (tracemalloc) reported against the size of the frame.
3. ``log``: a prediction log of 10,000,000 rows (10 days × 1,000,000, the last three drifted,
   60 % with feedback) written as the server writes it, then ``molen monitor --since … --every
   1d`` in a fresh process: target under 30 s; the process's peak RSS is reported (DuckDB runs
   with its default 512MB memory limit, setting monitor.memory_limit).
4. ``explain``: ``molen.explain`` of 2,000 rows of an XGBoost model against
   ``shap.TreeExplainer(model)(rows)`` called directly: target at most 1.2×.

Medians are reported; the table goes to stdout, progress to stderr, every sample to
``benchmarks/results/monitor.json``. Work files live under ``.bench/tmp/`` (removed at the end
unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import harness
from harness import log
from peers import PEERS, REPO_ROOT, ensure_peer_venv

RESULTS = REPO_ROOT / "benchmarks" / "results" / "monitor.json"
PEER = REPO_ROOT / "benchmarks" / "evidently_drift_peer.py"
NUMERIC, CATEGORICAL = 15, 5


@dataclass(frozen=True)
class Plan:
    drift_rows: int
    repeats: int
    scale_rows: int
    log_days: int
    log_rows_per_day: int
    explain_rows: int


FULL = Plan(100_000, 5, 1_000_000, 10, 1_000_000, 2_000)
QUICK = Plan(100_000, 2, 1_000_000, 10, 100_000, 500)


@dataclass
class Row:
    benchmark: str
    molen: str
    other: str
    ratio: str
    target: str
    passed: bool | None
    note: str = ""


def frame(rows: int, *, drifted: bool, seed: int) -> Any:
    """The 20-column frame, with the three injected drifts when ``drifted``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i in range(NUMERIC):
        values = rng.normal(0.0, 1.0, rows)
        if drifted and i == 0:
            values = values + 0.5
        if drifted and i == 1:
            values = values * 1.5
        columns[f"num_{i}"] = values
    for i in range(CATEGORICAL):
        levels = [f"c{i}_{k}" for k in range(4 + i)]
        shares = np.full(len(levels), 1 / len(levels))
        if drifted and i == 0:
            shares = np.linspace(1, 3, len(levels))
            shares = shares / shares.sum()
        columns[f"cat_{i}"] = rng.choice(levels, rows, p=shares)
    return pd.DataFrame(columns)


def timed(call: Any, repeats: int) -> tuple[list[float], list[float], Any]:
    """Wall and CPU seconds of ``repeats`` calls after one warm-up, and the last result."""
    result = call()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus, result


def seconds(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s"


def bench_drift(plan: Plan, work: Path, raw: dict[str, Any]) -> list[Row]:
    import molen
    from molen.models.bins import bins_from_frame

    reference = frame(plan.drift_rows, drifted=False, seed=1)
    current = frame(plan.drift_rows, drifted=True, seed=2)
    reference.to_parquet(work / "reference.parquet")
    current.to_parquet(work / "current.parquet")
    python = ensure_peer_venv("evidently", PEERS["evidently"])
    out = work / "evidently.json"
    log("Evidently's DataDriftPreset on 100k x 20 …")
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    subprocess.run(
        [
            str(python),
            str(PEER),
            "--reference",
            str(work / "reference.parquet"),
            "--current",
            str(work / "current.parquet"),
            "--repeat",
            str(max(3, plan.repeats // 2 + 1)),
            "--out",
            str(out),
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    theirs = json.loads(out.read_text())
    log("molen, both presets …")
    walls, cpus, same_table = timed(
        lambda: molen.drift_report(reference, current, preset="evidently"), plan.repeats
    )
    bin_wall, bin_cpu, bins = timed(lambda: bins_from_frame(reference), plan.repeats)
    ours_wall, ours_cpu, ours = timed(lambda: molen.drift_report(bins, current), plan.repeats)
    names = {
        "wasserstein": "Wasserstein distance (normed)",
        "jensenshannon": "Jensen-Shannon distance",
        "ks": "K-S p_value",
        "chisquare": "chi-square p_value",
        "z": "Z-test p_value",
    }
    agree = [
        c.column
        for c in same_table.columns
        if c.drifted == theirs["columns"][c.column]["drifted"]
        and names[c.method] == theirs["columns"][c.column]["method"]
    ]
    statistic_gap = max(
        abs(c.statistic - theirs["columns"][c.column]["statistic"]) for c in same_table.columns
    )
    raw["drift"] = {
        "evidently": theirs,
        "molen_evidently_preset": {"wall": walls, "cpu": cpus, "result": same_table.to_dict()},
        "molen_binning": {"wall": bin_wall, "cpu": bin_cpu},
        "molen_default": {"wall": ours_wall, "cpu": ours_cpu, "result": ours.to_dict()},
    }
    their_cpu = statistics.median(theirs["cpu_seconds"])
    their_wall = statistics.median(theirs["wall_seconds"])
    drifted_ours = sorted(c.column for c in ours.columns if c.drifted)
    drifted_theirs = sorted(name for name, c in theirs["columns"].items() if c["drifted"])
    return [
        Row(
            "drift 100k×20, evidently preset (CPU)",
            seconds(cpus),
            f"{their_cpu:.3f} s",
            f"{their_cpu / statistics.median(cpus):.1f}×",
            "≥ 20×",
            their_cpu / statistics.median(cpus) >= 20,
            f"verdicts agree on {len(agree)}/{len(same_table.columns)} columns (method and drift), "
            f"largest statistic difference {statistic_gap:.2g}; Evidently flags {', '.join(drifted_theirs)}",
        ),
        Row(
            "drift 100k×20, evidently preset (wall)",
            seconds(walls),
            f"{their_wall:.3f} s",
            f"{their_wall / statistics.median(walls):.1f}×",
            "-",
            None,
        ),
        Row(
            "drift 100k×20, molen preset on bins (CPU)",
            seconds(ours_cpu),
            f"{their_cpu:.3f} s",
            f"{their_cpu / statistics.median(ours_cpu):.1f}×",
            "≥ 20×",
            their_cpu / statistics.median(ours_cpu) >= 20,
            f"flags {', '.join(drifted_ours)}; binning the reference once (at log_model) {seconds(bin_cpu)}",
        ),
    ]


def bench_scale(plan: Plan, work: Path, raw: dict[str, Any]) -> list[Row]:
    import molen
    from molen.models.bins import bins_from_frame

    bins = bins_from_frame(frame(100_000, drifted=False, seed=1))
    current = frame(plan.scale_rows, drifted=True, seed=3)
    size = int(current.memory_usage(deep=True).sum())
    walls, cpus, report = timed(lambda: molen.drift_report(bins, current), max(3, plan.repeats // 2))
    tracemalloc.start()
    molen.drift_report(bins, current)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    raw["scale"] = {"wall": walls, "cpu": cpus, "peak_bytes": peak, "frame_bytes": size}
    return [
        Row(
            f"drift {plan.scale_rows / 1e6:g}M×20, molen preset",
            seconds(walls),
            "",
            "",
            "< 5 s",
            statistics.median(walls) < 5,
            f"peak allocation {peak / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB frame; "
            f"flags {', '.join(c.column for c in report.columns if c.drifted)}",
        )
    ]


def _chance(data: Any) -> Any:
    """The true chance of the positive class (what the log's truths are drawn from, and what the
    model, trained on draws from it, learns)."""
    import numpy as np

    return 1 / (1 + np.exp(-(data["num_2"].to_numpy() + (data["cat_1"] == "c1_0") - 0.5) * 3))


def _project(work: Path) -> Path:
    """A project with the 20-column model registered as ``bench/1``."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    import molen
    from molen.project import init_project

    root = work / "project"
    init_project(root, experiment="bench")
    train = frame(20_000, drifted=False, seed=4)
    target = (np.random.default_rng(4).random(len(train)) < _chance(train)).astype(int)
    model = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        (
                            "cats",
                            OneHotEncoder(handle_unknown="ignore"),
                            [f"cat_{i}" for i in range(CATEGORICAL)],
                        )
                    ],
                    remainder="passthrough",
                ),
            ),
            ("model", LogisticRegression(max_iter=500)),
        ]
    ).fit(train, target)
    here = Path.cwd()
    os.chdir(root)
    try:
        with molen.start_run() as run:
            run.log_metric("accuracy", float((model.predict(train) == target).mean()))
            run.log_model(model, "bench", reference=train, y_reference=target)
    finally:
        os.chdir(here)
    return root


def _write_log(root: Path, plan: Plan, start: datetime) -> int:
    """The server's layout and schema, a day per partition; returns the rows written."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    written = 0
    for day in range(plan.log_days):
        moment = start + timedelta(days=day)
        data = frame(plan.log_rows_per_day, drifted=day >= plan.log_days - 3, seed=100 + day)
        rng = np.random.default_rng(day)
        rows = len(data)
        ids = pa.array(np.arange(written, written + rows)).cast(pa.string())
        stamps = (moment.timestamp() * 1e6 + np.sort(rng.integers(0, 86_400_000_000, rows))).astype("int64")
        positive = _chance(data)  # the model's probabilities, near enough: it learned this
        predicted = (positive >= 0.5).astype(np.int64)
        struct = pa.StructArray.from_arrays(
            [pa.array(data[name].to_numpy()) for name in data.columns], names=list(data.columns)
        )
        table = pa.table(
            {
                "request_id": ids,
                "timestamp": pa.array(stamps).cast(pa.timestamp("us", tz="UTC")),
                "version": pa.array(["1"] * rows, pa.string()),
                "role": pa.array(["champion"] * rows, pa.string()),
                "latency_ms": pa.array(rng.gamma(2.0, 0.5, rows)),
                "inputs": struct,
                "prediction": pa.array(predicted),
                "probability": pa.array(np.maximum(positive, 1 - positive)),
                "probabilities": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.column_stack([1 - positive, positive]).ravel()), 2
                ).cast(pa.list_(pa.float64())),
            }
        )
        folder = root / "predictions" / "model=bench" / f"date={moment:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        for part, offset in enumerate(range(0, rows, 250_000)):
            pq.write_table(table.slice(offset, 250_000), folder / f"part-{part}.parquet", compression="zstd")
        chosen = rng.random(rows) < 0.6
        truth = (rng.random(rows) < positive).astype(int).astype(str)
        feedback = pa.table(
            {
                "request_id": ids.filter(pa.array(chosen)),
                "timestamp": pa.array(stamps[chosen] + 3_600_000_000).cast(pa.timestamp("us", tz="UTC")),
                "truth": pa.array(truth[chosen]),
            }
        )
        folder = root / "feedback" / "model=bench" / f"date={moment:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(feedback, folder / "part-0.parquet", compression="zstd")
        written += rows
        log(f"  log day {day + 1}/{plan.log_days}: {written:,} rows")
    return written


def bench_log(plan: Plan, work: Path, raw: dict[str, Any]) -> list[Row]:
    import psutil

    root = _project(work)
    start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=plan.log_days
    )
    rows = _write_log(root / ".molen" / "log", plan, start)
    command = [
        sys.executable,
        "-m",
        "molen",
        "monitor",
        "bench/1",
        "--since",
        f"{start:%Y-%m-%d}",
        "--every",
        "1d",
        "--format",
        "json",
        "-o",
        str(work / "report.json"),
    ]
    walls, peaks = [], []
    for _ in range(max(2, plan.repeats // 2)):
        began = time.perf_counter()
        child = psutil.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak = 0
        while child.poll() is None:
            try:
                peak = max(peak, child.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        walls.append(time.perf_counter() - began)
        peaks.append(peak)
        if child.returncode not in (0, 1, 2):
            raise RuntimeError(
                f"molen monitor failed: {child.stderr.read().decode() if child.stderr else ''}"
            )
    report = json.loads((work / "report.json").read_text())
    shares = [entry["drifted_share"] for entry in report["timeline"]]
    check = report["performance"].get("estimate_check", {}).get("mean_absolute_error", {})
    raw["log"] = {"wall": walls, "peak_rss": peaks, "rows": rows, "report_seconds": report["seconds"]}
    return [
        Row(
            f"monitor {rows / 1e6:g}M-row log per day",
            seconds(walls),
            "",
            "",
            "< 30 s",
            statistics.median(walls) < 30,
            f"fresh process, peak RSS {max(peaks) / 2**20:.0f} MiB; drifted share per day "
            f"{' '.join(f'{share:.0%}' for share in shares)} (3 of 20 features drift in the last 3 days); "
            f"estimated vs realized accuracy, mean gap per day {check.get('accuracy', float('nan')):.3f}",
        )
    ]


def bench_explain(plan: Plan, work: Path, raw: dict[str, Any]) -> list[Row]:
    import numpy as np
    import shap
    import xgboost

    import molen
    from molen.explain.shapley import explain

    data = frame(20_000, drifted=False, seed=5).iloc[:, :NUMERIC]
    target = (data["num_0"] + data["num_1"] * data["num_2"] > 0).astype(int)
    model = xgboost.XGBClassifier(n_estimators=200, max_depth=6).fit(data, target)
    here = Path.cwd()
    root = work / "explain"
    from molen.project import init_project

    init_project(root, experiment="explain")
    os.chdir(root)
    try:
        with molen.start_run() as run:
            run.log_model(model, "trees", reference=data)
        predictor = molen.load_model("trees/1")
    finally:
        os.chdir(here)
    rows = data.iloc[: plan.explain_rows]
    ours, theirs = [], []
    explain(predictor, rows)
    shap.TreeExplainer(model)(rows)
    for _ in range(plan.repeats):
        began = time.perf_counter()
        found = explain(predictor, rows)
        ours.append(time.perf_counter() - began)
        began = time.perf_counter()
        direct = shap.TreeExplainer(model)(rows)
        theirs.append(time.perf_counter() - began)
    same = bool(np.allclose(found.values, np.asarray(direct.values), atol=1e-5))
    raw["explain"] = {"molen": ours, "shap": theirs, "same_values": same}
    ratio = statistics.median(ours) / statistics.median(theirs)
    return [
        Row(
            f"tree explanations, {plan.explain_rows:,} rows",
            seconds(ours),
            seconds(theirs),
            f"{ratio:.2f}×",
            "≤ 1.2×",
            ratio <= 1.2,
            f"XGBoost 200 trees; same attributions as SHAP: {same}",
        )
    ]


def table(rows: list[Row]) -> str:
    return harness.table(
        ["benchmark", "molen", "Evidently / SHAP", "ratio", "target", "pass"],
        [[r.benchmark, r.molen, r.other, r.ratio, r.target, harness.verdict(r.passed)] for r in rows],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark molen's drift, monitoring and explanations.")
    harness.standard_options(
        parser,
        results=RESULTS,
        quick="a 1M-row log and fewer repeats (about 2 minutes)",
        keep="keep the work files in .bench/tmp",
        only=("drift", "scale", "log", "explain"),
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    date = harness.now()
    facts = {
        "nproc": os.cpu_count(),
        "machine": os.uname().machine,
        "system": f"{os.uname().sysname} {os.uname().release}",
        "loadavg_at_start": harness.loadavg(),
        "python": sys.version.split()[0],
        "libraries": {
            name: metadata.version(name) for name in ("molen", "numpy", "pandas", "scipy", "duckdb", "shap")
        },
    }
    print("\n".join(harness.heading("monitoring", date, args.quick, facts)), flush=True)
    raw: dict[str, Any] = {}
    benches = {"drift": bench_drift, "scale": bench_scale, "log": bench_log, "explain": bench_explain}
    with harness.work_folder("monitor", args.keep, log) as work:
        rows = harness.run_selected(benches, args.only, (plan, work), raw, log)
    runtime = time.perf_counter() - started
    legend = "ratio: Evidently / molen (how many times faster molen is); explanations molen / SHAP direct"
    harness.report(table(rows), rows, runtime, legend)
    harness.write_results(
        args.output, harness.document(date, args.quick, facts, plan, runtime, rows, raw), log
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

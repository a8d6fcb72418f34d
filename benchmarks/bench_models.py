"""Model benchmark: molen's model registry against MLflow's, measured in the same run.

Usage::

    .venv/bin/python benchmarks/bench_models.py [--quick] [--only load|predict] [--output PATH] [--keep]

One realistic scikit-learn model is fitted once, here, under molen's python: a ``Pipeline`` of a
``ColumnTransformer`` (``StandardScaler`` on 6 numeric columns, ``OneHotEncoder`` on 3 text
columns) and a ``RandomForestClassifier(n_estimators=100)``, on 5,000 seeded synthetic churn
rows. It is logged into a fresh molen project (``molen init`` + ``git init`` + one commit, as
``bench_tracking.py`` makes them) as ``churn/1`` (pickle, molen's default for scikit-learn) and
``churn_skops/1`` (``serialization="skops"``), and pickled to a file that the MLflow peer
(``benchmarks/mlflow_models_peer.py``, run by the python of the MLflow venv that
``benchmarks/peers.py`` builds in ``.bench/mlflow``; both venvs have the same scikit-learn,
NumPy and pandas, checked) saves with ``mlflow.sklearn.save_model`` twice: with MLflow's
default serialization (skops) and with ``serialization_format="cloudpickle"``. A
``LogisticRegression`` with the same preprocessing is logged as ``churn_lr/1``.

Benchmarks and targets:

1. ``load``: ``molen.load_model`` followed by one prediction, from a fresh process, next to
   ``mlflow.pyfunc.load_model`` for the same model. Each measurement is one fresh process
   running ``import pandas; import molen; molen.load_model("churn/1").predict(one_row)`` (or the
   MLflow equivalent), timed by this process around ``subprocess.run`` (interpreter start to
   exit); the child also reports its own split (import pandas, import the tool, load, predict).
   All four packages are measured in turn, the order rotating each round, after one untimed
   warm-up each. Both children get the same environment (``molen_env()``: bytecode compiled
   into ``.bench/pycache``; MLflow's telemetry off). Target: molen (pickle, its default) at
   least 2x faster than MLflow's default (skops). molen pickle against MLflow cloudpickle and
   molen skops against MLflow skops are like-for-like rows without a target;
   ``python -c "import pandas"`` is the floor both share.
2. ``predict``: in this process, the molen predictor against the raw model it wraps
   (``m.model``). 10,000 rows (random forest), calls alternating: target ratio <= 1.2x.
   One row, per-call times in alternating blocks, added time = median(molen) - median(raw):
   target < 100 us on the logistic regression (a cheap model, so its own time does not drown
   the difference); the random forest (about 5 ms a call, noisy) is reported alongside, and
   ``m.validate(row)`` alone, the signature check that is the whole of the overhead.

Medians are reported; the table goes to stdout, progress to stderr, and every sample to
``benchmarks/results/models.json``. Projects and packages live under ``.bench/tmp/`` (removed
at the end unless ``--keep``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from bench_tracking import (  # noqa: E402
    MOLEN_PYTHON,
    REPO_ROOT,
    Projects,
    machine_facts,
    median,
    molen_env,
    run_json,
)
from harness import log as _log  # noqa: E402
from mlflow_tracking_peer import TELEMETRY_OFF  # noqa: E402
from peers import ensure_mlflow_venv  # noqa: E402

PEER = HERE / "mlflow_models_peer.py"
RESULTS = HERE / "results" / "models.json"
LIBRARIES = ("scikit-learn", "pandas", "numpy", "skops")
SEED = 0
TRAIN_ROWS = 5_000
BIG_ROWS = 10_000
NUMERIC = ("tenure_months", "monthly_charges", "total_charges", "support_calls", "age", "data_gb")
TEXT = ("plan", "contract", "payment")


@dataclass(frozen=True)
class Plan:
    """How much of each benchmark to run (full or --quick)."""

    load_repeat: int = 7
    big_repeat: int = 15
    rf_single_calls: int = 1_500
    lr_single_calls: int = 3_000
    validate_calls: int = 2_000
    block: int = 50


FULL = Plan()
QUICK = Plan(load_repeat=3, big_repeat=7, rf_single_calls=300, lr_single_calls=1_000, validate_calls=1_000)


def log(message: str) -> None:
    _log(f"models: {message}")


# -- the data and the models ---------------------------------------------------------------------


def churn_frame(rows: int, seed: int) -> tuple[Any, Any]:
    """``rows`` synthetic customers (6 numeric, 3 text columns) and whether each churned."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 73, rows)
    monthly = rng.uniform(18.0, 120.0, rows).round(2)
    plan = rng.choice(["basic", "standard", "pro", "enterprise"], rows, p=[0.4, 0.3, 0.2, 0.1])
    contract = rng.choice(["month-to-month", "one-year", "two-year"], rows, p=[0.55, 0.25, 0.2])
    frame = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": (monthly * tenure * rng.uniform(0.9, 1.1, rows)).round(2),
            "support_calls": rng.poisson(1.5, rows),
            "age": rng.integers(18, 81, rows),
            "data_gb": rng.gamma(2.0, 8.0, rows).round(3),
            "plan": plan,
            "contract": contract,
            "payment": rng.choice(["card", "bank transfer", "paypal", "invoice"], rows),
        }
    )
    score = (
        -1.0
        - 0.04 * tenure
        + 0.02 * (monthly - 60)
        + 0.35 * frame["support_calls"].to_numpy()
        + 1.2 * (contract == "month-to-month")
        - 0.4 * (plan == "enterprise")
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-score))).astype("int64")
    return frame, churned


def build_models(X: Any, y: Any) -> dict[str, Any]:
    """The random forest pipeline and the logistic regression one, fitted on ``X``, ``y``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    def prep() -> ColumnTransformer:
        return ColumnTransformer(
            [
                ("num", StandardScaler(), list(NUMERIC)),
                ("cat", OneHotEncoder(handle_unknown="ignore"), list(TEXT)),
            ]
        )

    rf = Pipeline([("prep", prep()), ("clf", RandomForestClassifier(n_estimators=100, random_state=0))])
    lr = Pipeline([("prep", prep()), ("clf", LogisticRegression(max_iter=1000))])
    return {"rf": rf.fit(X, y), "lr": lr.fit(X, y)}


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """Run with the current folder set to ``folder`` (where molen finds its project)."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@dataclass
class Setup:
    """What the benchmarks work on."""

    project: Path
    mlflow_packages: dict[str, Path]
    models: dict[str, Any]
    big: Any  # 10,000-row frame
    row: Any  # one-row frame
    row_dict: dict[str, Any]
    info: dict[str, Any]


def prepare(work: Path, projects: Projects, mlflow_python: Path) -> Setup:
    """Fit, log into a fresh molen project, and have the MLflow peer save the same model."""
    import molen

    for key in [k for k in os.environ if k.startswith("MOLEN_")]:
        del os.environ[key]  # the project's own settings only, as in molen_env()
    info: dict[str, Any] = {}
    X, y = churn_frame(TRAIN_ROWS, SEED)
    started = time.perf_counter()
    models = build_models(X, y)
    info["fit_seconds"] = time.perf_counter() - started
    log(f"fitted the pipelines on {TRAIN_ROWS:,} rows in {info['fit_seconds']:.1f} s")

    project = projects.molen("models")
    logged = {}
    with inside(project):
        for name, key, serialization in (
            ("churn", "rf", None),
            ("churn_skops", "rf", "skops"),
            ("churn_lr", "lr", None),
        ):
            started = time.perf_counter()
            with molen.start_run(experiment="bench", name=name) as run:
                found = run.log_model(
                    models[key], name, reference=X, y_reference=y, serialization=serialization
                )
            seconds = time.perf_counter() - started
            size = sum(f.stat().st_size for f in (project / ".molen").rglob("*") if f.is_file())
            logged[name] = {
                "uri": found.uri,
                "digest": found.digest,
                "seconds": seconds,
                "store_bytes_after": size,
            }
            log(f"logged {found.uri} ({serialization or 'default'}) in {seconds:.1f} s")
    info["molen_logged"] = logged

    bundle = work / "model.pkl"
    with bundle.open("wb") as handle:
        pickle.dump({"model": models["rf"], "example": X.head(3)}, handle, protocol=5)
    log("MLflow peer: mlflow.sklearn.save_model (skops, then cloudpickle)")
    saved = run_json(
        [
            str(mlflow_python),
            str(PEER),
            "save",
            "--model",
            str(bundle),
            "--dir",
            str(work / "mlflow"),
            "--format",
            "skops",
            "--format",
            "cloudpickle",
        ],
        cwd=REPO_ROOT,
        env={**molen_env(), **TELEMETRY_OFF},
    )
    info["mlflow_saved"] = saved["packages"]
    ours = {name: metadata.version(name) for name in LIBRARIES}
    theirs = {name: saved["versions"].get(name) for name in LIBRARIES}
    info["versions"] = {"molen_venv": ours, "mlflow_venv": theirs}
    if ours != theirs:
        raise RuntimeError(f"the venvs differ, the pickle would not be the same model: {ours} vs {theirs}")
    skops = saved["packages"]["skops"]
    if skops["skops_trusted_types"]:
        log(f"MLflow skops needed skops_trusted_types={skops['skops_trusted_types']}")

    big, _ = churn_frame(BIG_ROWS, SEED + 1)
    rows, _ = churn_frame(1, SEED + 2)
    row_dict = json.loads(rows.to_json(orient="records"))[0]
    return Setup(
        project=project,
        mlflow_packages={fmt: Path(p["path"]) for fmt, p in saved["packages"].items()},
        models=models,
        big=big,
        row=rows,
        row_dict=row_dict,
        info=info,
    )


# -- 1. load + one prediction, fresh processes ---------------------------------------------------------


CHILD = """\
import time
t0 = time.perf_counter()
import pandas as pd
t1 = time.perf_counter()
{import_}
t2 = time.perf_counter()
m = {load}
t3 = time.perf_counter()
y = m.predict(pd.DataFrame([{row!r}]))
t4 = time.perf_counter()
import json
times = {{"pandas": t1 - t0, "tool": t2 - t1, "load": t3 - t2, "predict": t4 - t3}}
print(json.dumps({{**times, "prediction": [int(v) for v in y]}}))
"""


@dataclass(frozen=True)
class Child:
    """One kind of fresh process: which python, where, and what it runs."""

    label: str
    python: Path
    cwd: Path
    code: str | None  # None: the floor, python -c "import pandas"


def children(setup: Setup, mlflow_python: Path) -> list[Child]:
    def molen_code(uri: str) -> str:
        return CHILD.format(import_="import molen", load=f"molen.load_model({uri!r})", row=setup.row_dict)

    def mlflow_code(path: Path) -> str:
        return CHILD.format(
            import_="import mlflow.pyfunc",
            load=f"mlflow.pyfunc.load_model({str(path)!r})",
            row=setup.row_dict,
        )

    return [
        Child("molen pickle", MOLEN_PYTHON, setup.project, molen_code("churn/1")),
        Child(
            "MLflow skops", mlflow_python, setup.project.parent, mlflow_code(setup.mlflow_packages["skops"])
        ),
        Child("molen skops", MOLEN_PYTHON, setup.project, molen_code("churn_skops/1")),
        Child(
            "MLflow cloudpickle",
            mlflow_python,
            setup.project.parent,
            mlflow_code(setup.mlflow_packages["cloudpickle"]),
        ),
        Child("floor molen venv", MOLEN_PYTHON, setup.project, None),
        Child("floor MLflow venv", mlflow_python, setup.project.parent, None),
    ]


def run_child(child: Child) -> dict[str, Any]:
    """Wall time of one fresh process (start to exit) and what it reported."""
    env = {**molen_env(), **TELEMETRY_OFF}
    if child.code is None:
        cmd = [str(child.python), "-c", "import pandas"]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=child.cwd, env=env, check=True, capture_output=True)
        return {"wall": time.perf_counter() - start}
    start = time.perf_counter()
    found = run_json([str(child.python), "-c", child.code], cwd=child.cwd, env=env)
    return {"wall": time.perf_counter() - start, **found}


@dataclass
class Row:
    """One line of the table. Times in seconds; ``ratio`` as the row defines it."""

    benchmark: str
    molen: float | None
    other: float | None
    ratio: str
    target: str
    passed: bool | None
    note: str = ""


def bench_load(plan: Plan, setup: Setup, mlflow_python: Path, raw: dict[str, Any]) -> list[Row]:
    kinds = children(setup, mlflow_python)
    log("load: one untimed warm-up of each (bytecode, disk cache)")
    for child in kinds:
        run_child(child)
    samples: dict[str, list[dict[str, Any]]] = {child.label: [] for child in kinds}
    for i in range(plan.load_repeat):
        order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]
        log(f"load: round {i + 1}/{plan.load_repeat} ({len(order)} fresh processes)")
        for child in order:
            samples[child.label].append(run_child(child))
    raw["load"] = {"samples": samples, "row": setup.row_dict}

    predictions = {
        label: {json.dumps(s["prediction"]) for s in found}
        for label, found in samples.items()
        if "prediction" in found[0]
    }
    if len({p for found in predictions.values() for p in found}) > 1:
        log(f"WARNING: the fresh processes predicted differently: {predictions}")

    wall = {label: median([s["wall"] for s in found]) for label, found in samples.items()}

    def split(label: str) -> str:
        found = samples[label]
        keys = ("pandas", "tool", "load", "predict")
        parts = {k: median([s[k] for s in found]) for k in keys}
        rest = median([s["wall"] - sum(s[k] for k in keys) for s in found])
        return (
            f"{label}: import pandas {parts['pandas'] * 1000:.0f} ms, import {parts['tool'] * 1000:.0f} ms, "
            f"load {parts['load'] * 1000:.0f} ms, predict {parts['predict'] * 1000:.0f} ms, "
            f"interpreter start + exit {rest * 1000:.0f} ms"
        )

    def pair(name: str, ours: str, theirs: str, target: str, goal: float | None) -> Row:
        ratio = wall[theirs] / wall[ours]
        return Row(
            name,
            wall[ours],
            wall[theirs],
            f"{ratio:.2f}x",
            target,
            None if goal is None else ratio >= goal,
            f"{split(ours)}; {split(theirs)}",
        )

    return [
        pair(
            "load + 1 prediction, fresh process: molen pickle vs MLflow skops (defaults)",
            "molen pickle",
            "MLflow skops",
            ">=2x",
            2.0,
        ),
        pair(
            "load + 1 prediction: molen pickle vs MLflow cloudpickle",
            "molen pickle",
            "MLflow cloudpickle",
            "-",
            None,
        ),
        pair("load + 1 prediction: molen skops vs MLflow skops", "molen skops", "MLflow skops", "-", None),
        Row(
            "python -c 'import pandas' (the floor of both)",
            wall["floor molen venv"],
            wall["floor MLflow venv"],
            "-",
            "-",
            None,
        ),
    ]


# -- 2. the predictor's overhead, in this process ------------------------------------------------------


def per_call(fn: Callable[[Any], Any], args: list[Any]) -> list[float]:
    """The time of each call ``fn(arg)``."""
    clock = time.perf_counter
    found = []
    for arg in args:
        start = clock()
        fn(arg)
        found.append(clock() - start)
    return found


Call = tuple[Callable[[Any], Any], Callable[[], Any]]  # the function, and what makes its argument


def alternating(fns: dict[str, Call], calls: int, block: int) -> dict[str, list[float]]:
    """``calls`` timed calls of each function, in blocks of ``block``, the order reversed each block.

    The arguments of a block are made before it is timed.
    """
    for fn, make in fns.values():
        per_call(fn, [make() for _ in range(min(block, 20))])  # untimed warm-up
    samples: dict[str, list[float]] = {name: [] for name in fns}
    items = list(fns.items())
    for b in range(max(1, calls // block)):
        for name, (fn, make) in items if b % 2 == 0 else items[::-1]:
            samples[name].extend(per_call(fn, [make() for _ in range(block)]))
    return samples


def bench_predict(plan: Plan, setup: Setup, mlflow_python: Path, raw: dict[str, Any]) -> list[Row]:
    import pandas as pd

    import molen

    with inside(setup.project):
        rf = molen.load_model("churn/1")
        lr = molen.load_model("churn_lr/1")
    for predictor in (rf, lr):
        expected = predictor.model.predict(setup.big)
        if not (predictor.predict(setup.big) == expected).all():
            raise RuntimeError(f"{predictor!r} predicts differently from its raw model")
    gc.collect()

    def big_frame() -> Any:
        return setup.big

    def row() -> Any:
        return setup.row

    def new_row() -> Any:  # what a service does per request: a frame of the request's values
        return pd.DataFrame([setup.row_dict])

    log(f"predict: {BIG_ROWS:,} rows, random forest, {plan.big_repeat} calls each, alternating")
    big = alternating(
        {"molen": (rf.predict, big_frame), "raw": (rf.model.predict, big_frame)}, plan.big_repeat, 1
    )
    log(f"predict: 1 row, logistic regression, {plan.lr_single_calls:,} calls each")
    lr_one = alternating(
        {"molen": (lr.predict, row), "raw": (lr.model.predict, row)}, plan.lr_single_calls, plan.block
    )
    log(f"predict: 1 row, random forest, {plan.rf_single_calls:,} calls each")
    rf_one = alternating(
        {"molen": (rf.predict, row), "raw": (rf.model.predict, row)}, plan.rf_single_calls, plan.block
    )
    log(f"predict: m.validate(1 row), {plan.validate_calls:,} calls each on the same frame and on new ones")
    check = alternating(
        {"same": (lr.validate, row), "new": (lr.validate, new_row)}, plan.validate_calls, plan.block
    )
    raw["predict"] = {"big_rf": big, "single_lr": lr_one, "single_rf": rf_one, "validate": check}

    big_ours, big_raw = median(big["molen"]), median(big["raw"])
    big_ratio = big_ours / big_raw

    def added(samples: dict[str, list[float]], name: str, goal: float | None) -> Row:
        ours, theirs = median(samples["molen"]), median(samples["raw"])
        extra = ours - theirs
        return Row(
            name,
            ours,
            theirs,
            f"+{extra * 1e6:.0f} us" if extra >= 0 else f"{extra * 1e6:.0f} us",
            "<100 us added" if goal is not None else "-",
            None if goal is None else extra < goal,
            f"{len(samples['molen']):,} calls each; ratio {ours / theirs:.2f}x",
        )

    return [
        Row(
            f"predict {BIG_ROWS // 1000}k rows (RF): molen predictor vs raw model",
            big_ours,
            big_raw,
            f"{big_ratio:.3f}x",
            "<=1.2x",
            big_ratio <= 1.2,
            f"{plan.big_repeat} calls each; ratio = molen / raw",
        ),
        added(lr_one, "single-row added (LR): molen predictor vs raw model", 100e-6),
        added(rf_one, "single-row added (RF): molen predictor vs raw model", None),
        Row(
            "signature check, 1 row: m.validate(row)",
            median(check["same"]),
            None,
            "-",
            "-",
            None,
            "the whole of the predictor's work before it calls the model; the same frame each call, "
            "in a tight loop (warm caches)",
        ),
        Row(
            "signature check, 1 row, a new frame each call",
            median(check["new"]),
            None,
            "-",
            "-",
            None,
            "pd.DataFrame([values]) built (untimed) before each call, as a service does per request",
        ),
    ]


# -- output ----------------------------------------------------------------------------------------


def fmt_time(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:,.2f} s"
    if value >= 0.01:
        return f"{value * 1000:,.0f} ms"
    if value >= 0.001:
        return f"{value * 1000:,.2f} ms"
    return f"{value * 1e6:,.0f} us"


def table(rows: list[Row]) -> str:
    return harness.table(
        ["benchmark", "molen", "MLflow / raw model", "ratio", "target", "pass"],
        [
            [r.benchmark, fmt_time(r.molen), fmt_time(r.other), r.ratio, r.target, harness.verdict(r.passed)]
            for r in rows
        ],
    )


def header(facts: dict[str, Any], date: str, quick: bool) -> str:
    libs = facts["libraries"]
    return "\n".join(
        [
            *harness.heading("model", date, quick, facts),
            f"python {facts['python']}, molen {facts['molen']}, MLflow {facts['mlflow']}, "
            f"scikit-learn {libs['scikit-learn']}, pandas {libs['pandas']}, NumPy {libs['numpy']}, "
            f"skops {libs['skops']} (same in both venvs)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark molen's model loading and predictor.")
    harness.standard_options(
        parser,
        results=RESULTS,
        quick="fewer repeats (< 1.5 min)",
        keep="keep the project and packages in .bench/tmp",
        only=("load", "predict"),
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    date = harness.now()

    mlflow_python = ensure_mlflow_venv()
    facts = machine_facts(mlflow_python)
    facts["libraries"] = {name: metadata.version(name) for name in LIBRARIES}
    print(header(facts, date, args.quick), flush=True)

    raw: dict[str, Any] = {}
    benches = {"load": bench_load, "predict": bench_predict}
    with harness.work_folder("models", args.keep, log) as work:
        setup = prepare(work, Projects(work), mlflow_python)
        raw["setup"] = setup.info
        rows = harness.run_selected(benches, args.only, (plan, setup, mlflow_python), raw, log)
    runtime = time.perf_counter() - started

    legend = (
        "ratio: load rows MLflow / molen (how many times faster molen is); predict rows molen / raw, "
        "single-row rows the time molen adds per call"
    )
    harness.report(table(rows), rows, runtime, legend)
    harness.write_results(
        args.output, harness.document(date, args.quick, facts, plan, runtime, rows, raw), log
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

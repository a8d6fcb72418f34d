"""MLflow side ("peer") of the molen tracking benchmark.

Run this file with the python of the MLflow peer venv (see ``benchmarks/peers.py``), never
with molen's: it imports only MLflow and the standard library. Every subcommand prints exactly
one JSON object on stdout (progress and MLflow's own logging go to stderr). The tracking store
is MLflow's SQLite backend, ``sqlite:///<dir>/mlflow.db``, with artifacts under
``<dir>/artifacts``; the experiment is named ``bench``.

What is measured:

``log_metric --dir D --n N``
    Inside one run, N calls of ``mlflow.log_metric("loss", float(i), step=i)``, one at a
    time; the timed span covers the N calls and ``mlflow.end_run()`` (store creation and
    ``start_run`` are setup, reported as ``setup_seconds``).
    -> ``{"values": N, "seconds": s, "per_second": N/s, ...}``
``create_runs --dir D --n N``
    N runs, each ``start_run`` + one ``log_params`` of 5 params + 5 separate ``log_metric``
    calls + ``end_run``; all of it timed. -> ``{"runs": N, "seconds": s, "runs_per_second": ...}``
``populate --dir D --n N [--method client|bulk]``
    Setup, not a measurement: fill the store with N finished runs holding the synthetic
    params/metrics of ``synthetic_run`` (seeded, so molen's side can generate the same data).
    ``client`` uses ``MlflowClient.create_run`` + ``log_batch`` + ``set_terminated`` (three
    SQLite transactions per run); ``bulk`` inserts the same rows straight into MLflow's own
    SQLAlchemy tables (``mlflow.store.tracking.dbmodels``) in one transaction, an internal,
    schema-specific shortcut that is orders of magnitude faster.
``search --dir D --filter F --repeat R``
    Wall time of ``mlflow.search_runs(experiment_names=["bench"], filter_string=F)`` (a pandas
    DataFrame; MLflow fetches every page itself, up to 100,000 rows), R times in one process
    after the store was opened. -> times, median and row count.
``import_time --repeat R`` / ``cli_version --repeat R``
    Wall time of R fresh processes running ``python -c "import mlflow"`` or
    ``<venv>/bin/mlflow --version``. -> times and median.

MLflow's telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY=true``, ``DO_NOT_TRACK=true``)
in this process and its children unless ``--keep-telemetry`` is given, so that a machine
without internet access does not time network attempts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXPERIMENT = "bench"
DEFAULT_FILTER = "metrics.auc > 0.9 and params.max_depth = '8'"
DEFAULT_SEED = 1234

MAX_DEPTHS = ("2", "4", "8", "16")
LEARNING_RATES = ("0.001", "0.01", "0.03", "0.1")
N_ESTIMATORS = ("50", "100", "200", "400")
OPTIMIZERS = ("adam", "sgd", "rmsprop")

TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def synthetic_run(rng: random.Random, index: int) -> tuple[dict[str, str], dict[str, float]]:
    """The 5 params and 5 metrics of run ``index``; draws from ``rng`` in this exact order.

    params: max_depth in {2,4,8,16}, lr in {0.001,0.01,0.03,0.1}, n_estimators in
    {50,100,200,400}, optimizer in {adam,sgd,rmsprop} (each ``rng.choice``), seed = str(index).
    metrics: auc ~ U(0.5,1), loss ~ U(0,2), accuracy ~ U(0.5,1), precision ~ U(0,1),
    recall ~ U(0,1) (each ``rng.uniform``). With ``random.Random(1234)`` and 10,000 runs about
    5% (auc > 0.9 and max_depth = 8) match the default search filter.
    """
    params = {
        "max_depth": rng.choice(MAX_DEPTHS),
        "lr": rng.choice(LEARNING_RATES),
        "n_estimators": rng.choice(N_ESTIMATORS),
        "optimizer": rng.choice(OPTIMIZERS),
        "seed": str(index),
    }
    metrics = {
        "auc": rng.uniform(0.5, 1.0),
        "loss": rng.uniform(0.0, 2.0),
        "accuracy": rng.uniform(0.5, 1.0),
        "precision": rng.uniform(0.0, 1.0),
        "recall": rng.uniform(0.0, 1.0),
    }
    return params, metrics


def _log(message: str) -> None:
    print(f"[mlflow-peer] {message}", file=sys.stderr, flush=True)


def _telemetry_env(keep: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not keep:
        env.update(TELEMETRY_OFF)
    return env


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Keep stdout for the one JSON result: anything MLflow prints goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _open_store(directory: Path) -> tuple[str, str]:
    """Point MLflow at ``<directory>/mlflow.db`` and make sure experiment ``bench`` exists.

    Returns (experiment_id, tracking_uri). Creating the database runs MLflow's migrations,
    which takes seconds: callers keep this out of their timed span.
    """
    import mlflow

    directory.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{directory.resolve() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        artifacts = (directory.resolve() / "artifacts").as_uri()
        experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id, uri


def _base_result(command: str) -> dict[str, Any]:
    import mlflow

    return {
        "tool": "mlflow",
        "benchmark": command,
        "mlflow_version": mlflow.__version__,
        "python": platform.python_version(),
    }


def cmd_log_metric(args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    n: int = args.n
    t0 = time.perf_counter()
    _open_store(args.dir)
    mlflow.start_run(run_name="log_metric")
    setup = time.perf_counter() - t0

    start = time.perf_counter()
    for i in range(n):
        mlflow.log_metric("loss", float(i), step=i)
    mlflow.end_run()
    seconds = time.perf_counter() - start
    return {
        **_base_result("log_metric"),
        "values": n,
        "seconds": seconds,
        "per_second": n / seconds,
        "setup_seconds": setup,
    }


def cmd_create_runs(args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    n: int = args.n
    rng = random.Random(args.seed)
    specs = [synthetic_run(rng, i) for i in range(n)]
    t0 = time.perf_counter()
    experiment_id, _ = _open_store(args.dir)
    setup = time.perf_counter() - t0

    start = time.perf_counter()
    for i, (params, metrics) in enumerate(specs):
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"run-{i}"):
            mlflow.log_params(params)
            for key, value in metrics.items():
                mlflow.log_metric(key, value)
        if args.progress and (i + 1) % args.progress == 0:
            _log(f"create_runs: {i + 1}/{n} in {time.perf_counter() - start:.1f} s")
    seconds = time.perf_counter() - start
    return {
        **_base_result("create_runs"),
        "runs": n,
        "seconds": seconds,
        "runs_per_second": n / seconds,
        "params_per_run": 5,
        "metrics_per_run": 5,
        "setup_seconds": setup,
    }


def _populate_client(
    experiment_id: str, specs: list[tuple[dict[str, str], dict[str, float]]], progress: int
) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient()
    start = time.perf_counter()
    for i, (params, metrics) in enumerate(specs):
        run = client.create_run(experiment_id, run_name=f"run-{i}")
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            synchronous=True,
        )
        client.set_terminated(run_id)
        if progress and (i + 1) % progress == 0:
            elapsed = time.perf_counter() - start
            eta = elapsed / (i + 1) * (len(specs) - i - 1)
            _log(f"populate: {i + 1}/{len(specs)} in {elapsed:.1f} s (about {eta:.0f} s left)")


def _populate_bulk(
    uri: str,
    experiment_id: str,
    artifact_location: str,
    specs: list[tuple[dict[str, str], dict[str, float]]],
) -> None:
    """Insert runs, params, metrics, latest_metrics and tags rows in one transaction.

    The rows are what the ``client`` method leaves behind (finished runs, user ``unknown``,
    one ``mlflow.runName`` tag), so a search sees the same columns and values either way.
    """
    from mlflow.store.tracking.dbmodels.models import (
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    store = SqlAlchemyStore(uri, artifact_location)
    base_ms = int(time.time() * 1000)
    runs: list[dict[str, Any]] = []
    params_rows: list[dict[str, Any]] = []
    metric_rows: list[dict[str, Any]] = []
    tag_rows: list[dict[str, Any]] = []
    for i, (params, metrics) in enumerate(specs):
        run_id = uuid.uuid4().hex
        start_ms = base_ms + i
        runs.append(
            {
                "run_uuid": run_id,
                "name": f"run-{i}",
                "source_type": "UNKNOWN",
                "source_name": "",
                "entry_point_name": "",
                "user_id": "unknown",  # what MlflowClient.create_run stores without tags
                "status": "FINISHED",
                "start_time": start_ms,
                "end_time": start_ms + 1,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": "active",
                "artifact_uri": f"{artifact_location}/{run_id}/artifacts",
                "experiment_id": int(experiment_id),
            }
        )
        params_rows.extend({"key": k, "value": v, "run_uuid": run_id} for k, v in params.items())
        metric_rows.extend(
            {
                "key": k,
                "value": v,
                "timestamp": start_ms,
                "step": 0,
                "is_nan": False,
                "run_uuid": run_id,
            }
            for k, v in metrics.items()
        )
        tag_rows.append({"key": MLFLOW_RUN_NAME, "value": f"run-{i}", "run_uuid": run_id})

    with store.engine.begin() as conn:
        conn.execute(SqlRun.__table__.insert(), runs)
        conn.execute(SqlParam.__table__.insert(), params_rows)
        conn.execute(SqlMetric.__table__.insert(), metric_rows)
        conn.execute(SqlLatestMetric.__table__.insert(), metric_rows)
        conn.execute(SqlTag.__table__.insert(), tag_rows)


def cmd_populate(args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    n: int = args.n
    rng = random.Random(args.seed)
    specs = [synthetic_run(rng, i) for i in range(n)]
    t0 = time.perf_counter()
    experiment_id, uri = _open_store(args.dir)
    client = mlflow.MlflowClient()
    if client.search_runs([experiment_id], max_results=1):
        raise SystemExit(f"{args.dir} already holds runs in {EXPERIMENT!r}: use a fresh --dir")
    setup = time.perf_counter() - t0

    start = time.perf_counter()
    if args.method == "client":
        _populate_client(experiment_id, specs, args.progress)
    else:
        artifact_location = mlflow.get_experiment(experiment_id).artifact_location
        _populate_bulk(uri, experiment_id, artifact_location, specs)
    seconds = time.perf_counter() - start

    # Sanity check through MLflow's public API: the first run reads back as written.
    page = client.search_runs([experiment_id], max_results=1, order_by=["params.seed ASC"])
    first_ok = bool(page) and (page[0].data.params, page[0].data.metrics) == specs[0]
    if not first_ok:
        raise RuntimeError("populate: the first run does not read back as written")
    matching = sum(1 for p, m in specs if m["auc"] > 0.9 and p["max_depth"] == "8")
    return {
        **_base_result("populate"),
        "method": args.method,
        "runs": n,
        "params": 5 * n,
        "metrics": 5 * n,
        "seconds": seconds,
        "runs_per_second": n / seconds if seconds else None,
        "setup_seconds": setup,
        "seed": args.seed,
        "expected_rows_default_filter": matching,
    }


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    import mlflow
    import pandas  # noqa: F401  (imported up front so the first timed call does not pay for it)

    _open_store(args.dir)
    times: list[float] = []
    rows: list[int] = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        frame = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string=args.filter)
        times.append(time.perf_counter() - start)
        rows.append(len(frame))
    if len(set(rows)) > 1:
        raise RuntimeError(f"row counts differ between repeats: {rows}")
    return {
        **_base_result("search"),
        "filter": args.filter,
        "repeat": args.repeat,
        "times": times,
        "median": _median(times),
        "rows": rows[0] if rows else 0,
    }


def _time_processes(cmd: list[str], repeat: int, env: dict[str, str]) -> tuple[list[float], str]:
    times: list[float] = []
    output = ""
    for _ in range(repeat):
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            sys.stderr.write(result.stderr)
            raise RuntimeError(f"{cmd} exited with {result.returncode}")
        output = result.stdout.strip()
    return times, output


def cmd_import_time(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-c", "import mlflow"]
    times, _ = _time_processes(cmd, args.repeat, _telemetry_env(args.keep_telemetry))
    return {
        **_base_result("import_time"),
        "command": cmd,
        "repeat": args.repeat,
        "times": times,
        "median": _median(times),
    }


def cmd_cli_version(args: argparse.Namespace) -> dict[str, Any]:
    exe = Path(sys.executable).parent / ("mlflow.exe" if os.name == "nt" else "mlflow")
    cmd = [str(exe), "--version"]
    times, output = _time_processes(cmd, args.repeat, _telemetry_env(args.keep_telemetry))
    return {
        **_base_result("cli_version"),
        "command": cmd,
        "output": output,
        "repeat": args.repeat,
        "times": times,
        "median": _median(times),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="MLflow peer of the molen tracking benchmark; prints one JSON object."
    )
    parser.add_argument(
        "--keep-telemetry",
        action="store_true",
        help="do not set MLFLOW_DISABLE_TELEMETRY/DO_NOT_TRACK",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", type=Path, required=True, help="store folder (mlflow.db inside)")

    p = sub.add_parser("log_metric", help="N single log_metric calls in one run")
    with_dir(p)
    p.add_argument("--n", type=int, default=2000)
    p.set_defaults(func=cmd_log_metric)

    p = sub.add_parser("create_runs", help="N runs with 5 params and 5 metrics each")
    with_dir(p)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--progress", type=int, default=0, help="log progress every K runs")
    p.set_defaults(func=cmd_create_runs)

    p = sub.add_parser("populate", help="fill the store with N runs (setup, not measured)")
    with_dir(p)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--method", choices=("client", "bulk"), default="client")
    p.add_argument("--progress", type=int, default=1000, help="log progress every K runs")
    p.set_defaults(func=cmd_populate)

    p = sub.add_parser("search", help="time mlflow.search_runs with a filter")
    with_dir(p)
    p.add_argument("--filter", default=DEFAULT_FILTER)
    p.add_argument("--repeat", type=int, default=5)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("import_time", help="time fresh `python -c 'import mlflow'` processes")
    p.add_argument("--repeat", type=int, default=5)
    p.set_defaults(func=cmd_import_time)

    p = sub.add_parser("cli_version", help="time fresh `mlflow --version` processes")
    p.add_argument("--repeat", type=int, default=5)
    p.set_defaults(func=cmd_cli_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("n", "repeat"):
        if getattr(args, name, 1) < 1:
            raise SystemExit(f"--{name} must be at least 1")
    if not args.keep_telemetry:
        os.environ.update(TELEMETRY_OFF)
    with _stdout_to_stderr():
        result = args.func(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

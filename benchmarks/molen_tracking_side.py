"""molen side of the tracking benchmark: the counterpart of ``mlflow_tracking_peer.py``.

Run this file with molen's python (``<repo>/.venv/bin/python``), with the current folder set
to a molen project (``molen init`` + ``git init`` + one commit, as ``bench_tracking.py``
prepares it), so each measurement is a fresh process that finds its project, captures git
state and opens the SQLite store the way a user's training script does. Every subcommand
prints exactly one JSON object on stdout (anything else goes to stderr).

What is measured (setup, as in the MLflow peer, is reported as ``setup_seconds``):

``log_metric --n N [--variant run|module]``
    Setup: open the project's store and ``molen.start_run()``. Timed: N calls of
    ``run.log_metric("loss", float(i), step=i)`` (``--variant module``:
    ``molen.log_metric(...)`` on the active run) and the end of the run, which flushes every
    buffered value. Afterwards (untimed) the stored history is read back and must hold N values.
    -> ``{"values": N, "seconds": s, "per_second": N/s, ...}``
``create_runs --n N``
    Setup: open the store and the experiment, load ``molen.start_run``. Timed: N runs, each
    ``molen.start_run`` (git, environment and package capture included) + one
    ``run.log_params`` of 5 params + 5 separate ``run.log_metric`` calls + the end of the run.
    Data from ``synthetic_run`` of the peer.
    -> ``{"runs": N, "seconds": s, "runs_per_second": ...}``
``populate --n N``
    Setup, not a measurement: N finished runs in experiment ``bench`` holding the synthetic
    params/metrics of the peer's ``synthetic_run`` (same seed, so the same values), written
    straight through the metadata store (``create_run`` + ``log_batch`` per run), no tags,
    like the peer's ``populate`` which leaves only MLflow's run-name tag.
``search --filter F --repeat R``
    After the store is open (setup), R timed calls of ``molen.search_runs(F,
    experiment="bench")`` (records for every match, no limit). -> times, median, rows.
``cli --repeat R [--json-rows] -- ARGS...``
    Wall time of R fresh processes ``<venv>/bin/molen ARGS...``; with ``--json-rows`` the
    length of the JSON list the command printed. -> times, median, (rows).
``import_time --repeat R``
    Wall time of R fresh ``python -c "import molen"`` processes.
``info``
    Versions (molen, Python, SQLite).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow_tracking_peer import DEFAULT_FILTER, DEFAULT_SEED, EXPERIMENT, synthetic_run


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _base_result(command: str) -> dict[str, Any]:
    import molen

    return {
        "tool": "molen",
        "benchmark": command,
        "molen_version": molen.__version__,
        "python": platform.python_version(),
    }


def _open_store() -> Any:
    """The metadata store of the project in the current folder (opened and migrated)."""
    from molen.workspace import open_workspace

    return open_workspace().metadata


def cmd_info(args: argparse.Namespace) -> dict[str, Any]:
    import molen

    return {
        "tool": "molen",
        "benchmark": "info",
        "molen_version": molen.__version__,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "executable": sys.executable,
    }


def cmd_log_metric(args: argparse.Namespace) -> dict[str, Any]:
    import molen

    n: int = args.n
    t0 = time.perf_counter()
    _open_store()
    run = molen.start_run()
    setup = time.perf_counter() - t0

    if args.variant == "run":
        start = time.perf_counter()
        log_metric = run.log_metric
        for i in range(n):
            log_metric("loss", float(i), step=i)
        run.end()
        seconds = time.perf_counter() - start
    else:
        start = time.perf_counter()
        for i in range(n):
            molen.log_metric("loss", float(i), step=i)
        molen.end_run()
        seconds = time.perf_counter() - start

    stored = len(molen.get_metric_history(run.id, "loss"))
    if stored != n:
        raise RuntimeError(f"log_metric: {stored} values stored, {n} logged")
    return {
        **_base_result("log_metric"),
        "variant": args.variant,
        "values": n,
        "seconds": seconds,
        "per_second": n / seconds,
        "setup_seconds": setup,
        "stored": stored,
    }


def cmd_create_runs(args: argparse.Namespace) -> dict[str, Any]:
    import molen

    n: int = args.n
    rng = random.Random(args.seed)
    specs = [synthetic_run(rng, i) for i in range(n)]
    t0 = time.perf_counter()
    store = _open_store()
    experiment = store.get_or_create_experiment(EXPERIMENT)
    start_run = molen.start_run  # loads the run machinery, as `import mlflow` does for MLflow
    before = store.count_runs(experiment_ids=[experiment.id])
    setup = time.perf_counter() - t0

    start = time.perf_counter()
    for i, (params, metrics) in enumerate(specs):
        with start_run(experiment=EXPERIMENT, name=f"run-{i}") as run:
            run.log_params(params)
            for key, value in metrics.items():
                run.log_metric(key, value)
    seconds = time.perf_counter() - start

    stored = store.count_runs(experiment_ids=[experiment.id]) - before
    if stored != n:
        raise RuntimeError(f"create_runs: {stored} runs stored, {n} created")
    return {
        **_base_result("create_runs"),
        "runs": n,
        "seconds": seconds,
        "runs_per_second": n / seconds,
        "params_per_run": 5,
        "metrics_per_run": 5,
        "setup_seconds": setup,
    }


def cmd_populate(args: argparse.Namespace) -> dict[str, Any]:
    import uuid

    from molen.entities import Metric

    n: int = args.n
    rng = random.Random(args.seed)
    specs = [synthetic_run(rng, i) for i in range(n)]
    t0 = time.perf_counter()
    store = _open_store()
    experiment = store.get_or_create_experiment(EXPERIMENT)
    if store.count_runs(experiment_ids=[experiment.id]):
        raise SystemExit(f"experiment {EXPERIMENT!r} already holds runs: use a fresh project")
    setup = time.perf_counter() - t0

    start = time.perf_counter()
    base_ms = int(time.time() * 1000)
    for i, (params, metrics) in enumerate(specs):
        run_id = uuid.uuid4().hex
        start_ms = base_ms + i
        store.create_run(
            run_id=run_id,
            experiment_id=experiment.id,
            name=f"run-{i}",
            start_time=start_ms,
            user="unknown",
        )
        store.log_batch(
            run_id,
            params=params,
            metrics=[Metric(key, value, 0, start_ms) for key, value in metrics.items()],
            end=("FINISHED", start_ms + 1),
        )
    seconds = time.perf_counter() - start

    first = store.search_runs(experiment_ids=[experiment.id], limit=1, offset=n - 1)
    if not first or (first[0].params, first[0].metrics) != specs[0]:
        raise RuntimeError("populate: the first run does not read back as written")
    matching = sum(1 for p, m in specs if m["auc"] > 0.9 and p["max_depth"] == "8")
    return {
        **_base_result("populate"),
        "runs": n,
        "seconds": seconds,
        "runs_per_second": n / seconds,
        "setup_seconds": setup,
        "seed": args.seed,
        "expected_rows_default_filter": matching,
    }


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    import molen

    _open_store()
    times: list[float] = []
    rows: list[int] = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        records = molen.search_runs(args.filter, experiment=EXPERIMENT)
        times.append(time.perf_counter() - start)
        rows.append(len(records))
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


def _time_processes(cmd: list[str], repeat: int) -> tuple[list[float], str]:
    times: list[float] = []
    output = ""
    for _ in range(repeat):
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            sys.stderr.write(result.stderr)
            raise RuntimeError(f"{cmd} exited with {result.returncode}")
        output = result.stdout
    return times, output


def cmd_cli(args: argparse.Namespace) -> dict[str, Any]:
    words = args.words[1:] if args.words[:1] == ["--"] else list(args.words)
    cmd = [str(Path(sys.executable).parent / "molen"), *words]
    times, output = _time_processes(cmd, args.repeat)
    result: dict[str, Any] = {
        **_base_result("cli"),
        "command": cmd,
        "repeat": args.repeat,
        "times": times,
        "median": _median(times),
        "output_bytes": len(output.encode()),
    }
    if args.json_rows:
        result["rows"] = len(json.loads(output))
    else:
        result["output"] = output.strip()[:200]
    return result


def cmd_import_time(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-c", "import molen"]
    times, _ = _time_processes(cmd, args.repeat)
    return {
        **_base_result("import_time"),
        "command": cmd,
        "repeat": args.repeat,
        "times": times,
        "median": _median(times),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="molen side of the tracking benchmark; prints one JSON object."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("log_metric", help="N single log_metric calls in one run")
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--variant", choices=("run", "module"), default="run")
    p.set_defaults(func=cmd_log_metric)

    p = sub.add_parser("create_runs", help="N runs with 5 params and 5 metrics each")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.set_defaults(func=cmd_create_runs)

    p = sub.add_parser("populate", help="fill the store with N runs (setup, not measured)")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.set_defaults(func=cmd_populate)

    p = sub.add_parser("search", help="time molen.search_runs with a filter")
    p.add_argument("--filter", default=DEFAULT_FILTER)
    p.add_argument("--repeat", type=int, default=5)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("cli", help="time fresh `molen ARGS...` processes")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--json-rows", action="store_true", help="count the rows of the JSON list printed")
    p.add_argument("words", nargs=argparse.REMAINDER, help="arguments of molen (after --)")
    p.set_defaults(func=cmd_cli)

    p = sub.add_parser("import_time", help="time fresh `python -c 'import molen'` processes")
    p.add_argument("--repeat", type=int, default=5)
    p.set_defaults(func=cmd_import_time)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("n", "repeat"):
        if getattr(args, name, 1) < 1:
            raise SystemExit(f"--{name} must be at least 1")
    with _stdout_to_stderr():
        result = args.func(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

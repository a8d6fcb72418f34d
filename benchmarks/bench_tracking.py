"""Tracking benchmark: molen against MLflow, measured in the same run on the same machine.

Usage::

    .venv/bin/python benchmarks/bench_tracking.py [--quick] [--output PATH] [--keep]

Both tools are measured the same way: a fresh process per measurement (molen:
``benchmarks/molen_tracking_side.py`` under molen's python, with the current folder set to a
fresh molen project; MLflow: ``benchmarks/mlflow_tracking_peer.py`` under the python of the
MLflow venv that ``benchmarks/peers.py`` builds in ``.bench/mlflow``), each printing one JSON
line. Every molen project is ``molen init`` + ``git init`` + one commit, so git capture is
part of what is timed. Projects and MLflow stores live under ``.bench/tmp/`` (removed at the
end unless ``--keep``). Medians are reported; the table goes to stdout, progress to stderr,
and the full results (every sample) to ``benchmarks/results/tracking.json``.

Benchmarks and targets:

1. ``log_metric``: N=200,000 single calls inside one run (``run.log_metric`` and the
   module-level ``molen.log_metric``), calls + end of run timed; MLflow N=2,000.
   Values/s; target >= 100,000/s and >= 500x MLflow.
2. ``create_runs``: 1,000 runs with 5 params (one ``log_params``) and 5 metrics (5 calls)
   each (MLflow: 200 in ``--quick``, compared as a rate). Runs/s; target >= 30x MLflow.
3. search over 10,000 runs with the peer's synthetic data (``molen`` via its store, MLflow via
   the peer's bulk insert), filter ``metrics.auc > 0.9 and params.max_depth = '8'``:
   (a) ``molen runs list --filter ... --limit 1000 --format json`` as a fresh process,
   target < 0.3 s, and the same number of rows as MLflow; (b) in-process
   ``molen.search_runs`` against ``mlflow.search_runs``, target >= 10x.
4. cold start: ``molen --help`` and ``molen --version`` as fresh processes, target < 0.25 s;
   MLflow's ``import mlflow`` and ``mlflow --version`` alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from harness import loadavg, log  # noqa: E402
from mlflow_tracking_peer import DEFAULT_FILTER  # noqa: E402
from peers import BENCH_DIR, ensure_mlflow_venv  # noqa: E402

MOLEN_PYTHON = Path(sys.executable)
SIDE = HERE / "molen_tracking_side.py"
PEER = HERE / "mlflow_tracking_peer.py"
RESULTS = HERE / "results" / "tracking.json"
PYCACHE = BENCH_DIR / "pycache"
TIMEOUT = 900  # seconds for one measurement process

GIT_ENV = {
    "GIT_AUTHOR_NAME": "molen bench",
    "GIT_AUTHOR_EMAIL": "bench@molen.invalid",
    "GIT_COMMITTER_NAME": "molen bench",
    "GIT_COMMITTER_EMAIL": "bench@molen.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@dataclass(frozen=True)
class Plan:
    """How much of each benchmark to run (full or --quick)."""

    log_metric_n: int = 200_000
    log_metric_repeat: int = 5
    mlflow_log_metric_n: int = 2_000
    mlflow_log_metric_repeat: int = 3
    create_runs_n: int = 1_000
    create_runs_repeat: int = 3
    mlflow_create_runs_n: int = 1_000
    populate_n: int = 10_000
    cli_repeat: int = 7
    search_repeat: int = 5
    mlflow_import_repeat: int = 7
    mlflow_cli_repeat: int = 7


FULL = Plan()
QUICK = Plan(
    log_metric_repeat=3,
    mlflow_log_metric_n=1_000,
    mlflow_log_metric_repeat=1,
    create_runs_repeat=3,
    mlflow_create_runs_n=200,
    cli_repeat=5,
    search_repeat=5,
    mlflow_import_repeat=3,
    mlflow_cli_repeat=3,
)


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- processes ------------------------------------------------------------------------------------


def run_json(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one measurement process and return the JSON object it printed (its last line)."""
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise RuntimeError(f"exit {result.returncode}: {' '.join(map(str, cmd))}")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if not lines:
        sys.stderr.write(result.stderr[-4000:])
        raise RuntimeError(f"no output from {' '.join(map(str, cmd))}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def molen_env() -> dict[str, str]:
    """The environment of molen's processes: no MOLEN_* settings, and compiled bytecode.

    molen is installed editable, so its ``.pyc`` files would be written next to ``src/``;
    where ``PYTHONDONTWRITEBYTECODE`` is set (as on the project's machines) every molen
    process would compile molen from source, which no installed copy does. The cache goes
    to ``.bench/pycache`` instead (``PYTHONPYCACHEPREFIX``) and is filled by a warm-up
    before anything is timed. MLflow's venv already holds its ``.pyc`` files.
    """
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("MOLEN_")]:
        del env[key]  # the project's own settings only
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def molen_side(project: Path, *args: str) -> dict[str, Any]:
    return run_json([str(MOLEN_PYTHON), str(SIDE), *args], cwd=project, env=molen_env())


def mlflow_peer(python: Path, *args: str) -> dict[str, Any]:
    return run_json([str(python), str(PEER), *args], cwd=REPO_ROOT)


class Projects:
    """Fresh molen projects (molen init + git init + one commit) and MLflow store folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def _next(self, label: str) -> Path:
        self.count += 1
        return self.root / f"{self.count:02d}-{label}"

    def molen(self, label: str) -> Path:
        path = self._next(f"molen-{label}")
        molen = MOLEN_PYTHON.parent / "molen"
        subprocess.run([str(molen), "init", str(path)], check=True, capture_output=True, env=molen_env())
        env = {**os.environ, **GIT_ENV}
        for cmd in (
            ["git", "-c", "init.defaultBranch=main", "init", "-q"],
            ["git", "add", "-A"],
            ["git", "-c", "commit.gpgsign=false", "commit", "-q", "-m", "benchmark project"],
        ):
            subprocess.run(cmd, cwd=path, env=env, check=True, capture_output=True)
        return path

    def mlflow(self, label: str) -> Path:
        return self._next(f"mlflow-{label}")


# -- the benchmarks ------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    benchmark: str
    unit: str
    molen: float | None
    mlflow: float | None
    ratio: float | None  # how many times better molen is
    target: str
    passed: bool | None
    note: str = ""


def bench_log_metric(plan: Plan, projects: Projects, mlflow_python: Path, raw: dict[str, Any]) -> list[Row]:
    samples: dict[str, list[dict[str, Any]]] = {"run": [], "module": []}
    for variant in ("run", "module"):
        for i in range(plan.log_metric_repeat):
            log(f"log_metric molen {variant} {i + 1}/{plan.log_metric_repeat}")
            project = projects.molen(f"log-metric-{variant}")
            samples[variant].append(
                molen_side(project, "log_metric", "--n", str(plan.log_metric_n), "--variant", variant)
            )
    peer: list[dict[str, Any]] = []
    for i in range(plan.mlflow_log_metric_repeat):
        log(f"log_metric mlflow {i + 1}/{plan.mlflow_log_metric_repeat} (n={plan.mlflow_log_metric_n})")
        peer.append(
            mlflow_peer(
                mlflow_python,
                "log_metric",
                "--dir",
                str(projects.mlflow("log-metric")),
                "--n",
                str(plan.mlflow_log_metric_n),
            )
        )
    raw["log_metric"] = {"molen_run": samples["run"], "molen_module": samples["module"], "mlflow": peer}
    theirs = median([s["per_second"] for s in peer])
    rows = []
    for variant, label in (("run", "run.log_metric"), ("module", "molen.log_metric")):
        ours = median([s["per_second"] for s in samples[variant]])
        ratio = ours / theirs
        rows.append(
            Row(
                f"log_metric: {label} (values/s)",
                "/s",
                ours,
                theirs,
                ratio,
                ">=100k/s, >=500x",
                ours >= 100_000 and ratio >= 500,
                f"molen N={plan.log_metric_n:,}, MLflow N={plan.mlflow_log_metric_n:,}",
            )
        )
    return rows


def bench_create_runs(plan: Plan, projects: Projects, mlflow_python: Path, raw: dict[str, Any]) -> list[Row]:
    ours_samples = []
    for i in range(plan.create_runs_repeat):
        log(f"create_runs molen {i + 1}/{plan.create_runs_repeat} (n={plan.create_runs_n})")
        project = projects.molen("create-runs")
        ours_samples.append(molen_side(project, "create_runs", "--n", str(plan.create_runs_n)))
    log(f"create_runs mlflow (n={plan.mlflow_create_runs_n}; about 30 ms a run)")
    peer = mlflow_peer(
        mlflow_python,
        "create_runs",
        "--dir",
        str(projects.mlflow("create-runs")),
        "--n",
        str(plan.mlflow_create_runs_n),
    )
    raw["create_runs"] = {"molen": ours_samples, "mlflow": [peer]}
    ours = median([s["runs_per_second"] for s in ours_samples])
    theirs = float(peer["runs_per_second"])
    ratio = ours / theirs
    return [
        Row(
            "create_runs: 5 params + 5 metrics (runs/s)",
            "/s",
            ours,
            theirs,
            ratio,
            ">=30x",
            ratio >= 30,
            f"molen N={plan.create_runs_n:,}, MLflow N={plan.mlflow_create_runs_n:,}",
        )
    ]


def bench_search(plan: Plan, projects: Projects, mlflow_python: Path, raw: dict[str, Any]) -> list[Row]:
    project = projects.molen("search")
    log(f"search: populating the molen store with {plan.populate_n:,} runs")
    ours_populate = molen_side(project, "populate", "--n", str(plan.populate_n))
    store = projects.mlflow("search")
    log(f"search: populating the MLflow store with {plan.populate_n:,} runs (bulk)")
    peer_populate = mlflow_peer(
        mlflow_python, "populate", "--dir", str(store), "--n", str(plan.populate_n), "--method", "bulk"
    )
    expected = int(peer_populate["expected_rows_default_filter"])
    if ours_populate["expected_rows_default_filter"] != expected:
        log(
            "WARNING: the two populates generated different data: "
            f"{ours_populate['expected_rows_default_filter']} vs {expected} expected matches"
        )

    log(f"search: molen runs list (CLI) x{plan.cli_repeat}")
    cli = molen_side(
        project,
        "cli",
        "--repeat",
        str(plan.cli_repeat),
        "--json-rows",
        "--",
        "runs",
        "list",
        "--filter",
        DEFAULT_FILTER,
        "--limit",
        "1000",
        "--format",
        "json",
    )
    log(f"search: molen.search_runs x{plan.search_repeat}")
    ours = molen_side(project, "search", "--filter", DEFAULT_FILTER, "--repeat", str(plan.search_repeat))
    log(f"search: mlflow.search_runs x{plan.search_repeat}")
    theirs = mlflow_peer(
        mlflow_python,
        "search",
        "--dir",
        str(store),
        "--filter",
        DEFAULT_FILTER,
        "--repeat",
        str(plan.search_repeat),
    )
    raw["search"] = {
        "molen_populate": ours_populate,
        "mlflow_populate": peer_populate,
        "molen_cli": cli,
        "molen": ours,
        "mlflow": theirs,
    }
    counts = {"molen CLI": cli["rows"], "molen API": ours["rows"], "MLflow": theirs["rows"]}
    same = len(set(counts.values())) == 1 and theirs["rows"] == expected
    if not same:
        log(f"WARNING: row counts differ: {counts} (expected {expected})")
    ratio = theirs["median"] / ours["median"]
    return [
        Row(
            f"search: `molen runs list` CLI, {plan.populate_n // 1000}k runs (s)",
            "s",
            cli["median"],
            None,
            None,
            "<0.3 s",
            cli["median"] < 0.3,
            "fresh process, --format json; no MLflow equivalent",
        ),
        Row(
            "search: rows returned",
            "rows",
            float(cli["rows"]),
            float(theirs["rows"]),
            None,
            f"= MLflow ({expected})",
            same,
            ", ".join(f"{k} {v}" for k, v in counts.items()),
        ),
        Row(
            "search: in-process search_runs (s)",
            "s",
            ours["median"],
            theirs["median"],
            ratio,
            ">=10x",
            ratio >= 10,
            "molen list of records vs MLflow DataFrame",
        ),
    ]


def bench_cold_start(plan: Plan, projects: Projects, mlflow_python: Path, raw: dict[str, Any]) -> list[Row]:
    project = projects.molen("cold-start")
    n = str(plan.cli_repeat)
    log(f"cold start: molen --help, --version, import x{plan.cli_repeat}")
    help_ = molen_side(project, "cli", "--repeat", n, "--", "--help")
    version = molen_side(project, "cli", "--repeat", n, "--", "--version")
    imported = molen_side(project, "import_time", "--repeat", n)
    log(f"cold start: import mlflow x{plan.mlflow_import_repeat}")
    peer_import = mlflow_peer(mlflow_python, "import_time", "--repeat", str(plan.mlflow_import_repeat))
    log(f"cold start: mlflow --version x{plan.mlflow_cli_repeat} (seconds each)")
    peer_version = mlflow_peer(mlflow_python, "cli_version", "--repeat", str(plan.mlflow_cli_repeat))
    raw["cold_start"] = {
        "molen_help": help_,
        "molen_version": version,
        "molen_import": imported,
        "mlflow_import": peer_import,
        "mlflow_version": peer_version,
    }
    return [
        Row(
            "cold start: `molen --help` vs `import mlflow` (s)",
            "s",
            help_["median"],
            peer_import["median"],
            peer_import["median"] / help_["median"],
            "<0.25 s",
            help_["median"] < 0.25,
            "MLflow: python -c 'import mlflow', the floor of any mlflow command",
        ),
        Row(
            "cold start: `--version` (s)",
            "s",
            version["median"],
            peer_version["median"],
            peer_version["median"] / version["median"],
            "<0.25 s",
            version["median"] < 0.25,
            "",
        ),
        Row(
            "cold start: python -c 'import X' (s)",
            "s",
            imported["median"],
            peer_import["median"],
            peer_import["median"] / imported["median"],
            "-",
            None,
            "",
        ),
    ]


def warm_up(projects: Projects, mlflow_python: Path) -> None:
    """Untimed: compile molen's bytecode and read both tools' files once (disk cache)."""
    log("warm-up (untimed)")
    project = projects.molen("warm-up")
    molen_side(project, "create_runs", "--n", "3")
    molen_side(project, "log_metric", "--n", "10", "--variant", "module")
    molen_side(project, "search", "--repeat", "1")
    molen_side(project, "import_time", "--repeat", "1")
    for words in (["--help"], ["--version"], ["runs", "list", "--format", "json"]):
        molen_side(project, "cli", "--repeat", "1", "--", *words)
    subprocess.run([str(mlflow_python), "-c", "import mlflow"], check=True, capture_output=True)


# -- output ----------------------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:,.0f} ms" if value < 1 else f"{value:,.2f} s"
    if unit == "rows":
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:,.0f}/s"
    return f"{value:,.1f}/s"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:,.1f}x"


def table(rows: list[Row]) -> str:
    return harness.table(
        ["benchmark", "molen", "MLflow", "ratio", "target", "pass"],
        [
            [
                r.benchmark,
                fmt_value(r.molen, r.unit),
                fmt_value(r.mlflow, r.unit),
                fmt_ratio(r.ratio),
                r.target,
                harness.verdict(r.passed),
            ]
            for r in rows
        ],
    )


def machine_facts(mlflow_python: Path) -> dict[str, Any]:
    molen_info = run_json([str(MOLEN_PYTHON), str(SIDE), "info"], env=molen_env())
    mlflow_version = subprocess.run(
        [str(mlflow_python), "-c", "from importlib.metadata import version; print(version('mlflow'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    facts: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": molen_info["sqlite"],
        "molen": molen_info["molen_version"],
        "mlflow": mlflow_version,
    }
    facts["loadavg_at_start"] = loadavg()
    return facts


def header(facts: dict[str, Any], date: str, quick: bool) -> str:
    return "\n".join(
        [
            *harness.heading("tracking", date, quick, facts),
            f"python {facts['python']} (SQLite {facts['sqlite']}), "
            f"molen {facts['molen']}, MLflow {facts['mlflow']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark molen tracking against MLflow.")
    harness.standard_options(
        parser,
        results=RESULTS,
        quick="fewer repeats, smaller MLflow runs (< 3 min)",
        keep="keep the projects and stores in .bench/tmp",
        only=("log_metric", "create_runs", "search", "cold_start"),
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    date = harness.now()

    mlflow_python = ensure_mlflow_venv()
    facts = machine_facts(mlflow_python)
    print(header(facts, date, args.quick), flush=True)

    raw: dict[str, Any] = {}
    benches = {
        "log_metric": bench_log_metric,
        "create_runs": bench_create_runs,
        "search": bench_search,
        "cold_start": bench_cold_start,
    }
    with harness.work_folder("tracking", args.keep) as work:
        projects = Projects(work)
        warm_up(projects, mlflow_python)
        rows = harness.run_selected(benches, args.only, (plan, projects, mlflow_python), raw)
    runtime = time.perf_counter() - started

    harness.report(table(rows), rows, runtime)
    harness.write_results(
        args.output,
        harness.document(date, args.quick, facts, plan, runtime, rows, raw, filter=DEFAULT_FILTER),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

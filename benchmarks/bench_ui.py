"""Web-UI benchmark: molen's UI (``molen server``, ``/ui/``) against ``mlflow ui``, same runs.

Usage::

    .venv/bin/python benchmarks/bench_ui.py [--quick] [--runs N] [--only NAME ...] [--output PATH] [--keep]

The stores (one experiment ``bench``; N runs, default 10,000, ``--quick`` 500; each FINISHED,
with 5 params and 50 metrics x 100 steps, so 5,000 metric values a run and 50 M rows at 10,000
runs), filled by the fastest bulk path of each, since only reads are timed:

* molen: a SQLite store through ``SqlMetadataStore``: per run one ``create_run`` and one
  ``log_batch`` with its params, every metric value and the end;
* MLflow 3.17 (the venv of ``benchmarks/peers.py``): its SQLite schema made by MLflow itself
  (``mlflow db upgrade``), then the molen store's runs copied into MLflow's tables with SQL
  (``experiments`` with the tag ``mlflow.experimentKind = custom_model_development``, so the
  experiment page is the training-runs table as for a user who picked "Model training";
  ``runs``; ``tags`` ``mlflow.runName``, ``mlflow.user``, ``mlflow.source.type``; ``params``;
  ``latest_metrics``; ``metrics``): the same run ids, names, times and values. The copy is then
  read back with MLflow's own client (``benchmarks/mlflow_ui_peer.py check``: every run, the
  first runs by ``metrics.m0``, one run's params and one metric history) and compared with molen's.

The stores live in ``.bench/ui-store-N/`` (about 1.8 GB per 1,000 runs, 17.7 GB at 10,000:
molen's 5.8 GB, MLflow's 11.8 GB, as MLflow indexes every metric row three times). They are
deleted at the end unless ``--keep``; a later run with the same N reuses kept stores (filling
them takes about 10 minutes at 10,000 runs). Server logs are under ``.bench/tmp/``.

The servers, each on a free port, both running during all measurements, stopped with SIGTERM to
their process group at the end:

* molen: ``molen server --store sqlite:///… --artifacts DIR --port P`` (one process);
* MLflow: ``mlflow ui --backend-store-uri sqlite:///… --default-artifact-root DIR --host
  127.0.0.1 --port P`` (its default: uvicorn with 4 workers, and job consumers of its own,
  which get SIGKILL if SIGTERM leaves them; their queue folder in ``/dev/shm`` is removed).
  Timing starts once both process groups are idle (< 5 % of a core over 2 s).

Before anything is timed each page is loaded once in the browser and each API request made once
(untimed warm-up, for both). Then, molen and MLflow alternating, each figure the median of the
repetitions (``--quick``: fewer):

1. ``paint``: the runs page's first meaningful paint, 7 loads (5) of each. Headless Chromium
   (Debian's ``/usr/bin/chromium``, through Playwright), a fresh browser context for each load
   (empty cache and local storage), viewport 1400x900. The page is ``/ui/`` (molen) and
   ``/#/experiments/1/runs`` (MLflow). An init script checks the page every animation frame
   from the start; the time is the first frame (``performance.now()`` in the
   ``requestAnimationFrame`` callback, i.e. from navigation start, ``performance.timeOrigin``)
   in which a data row of the runs table is in the DOM with a non-empty box: molen's
   ``#runs-table .tabulator-row``; MLflow's ``.ag-row`` holding the run-name link
   ``a[href*='/runs/']`` (ag-grid rows; found by looking at MLflow's page). The wall time from
   ``page.goto`` to Playwright seeing the selector is kept too.
2. ``api``: one page of the runs table from the API, 25 requests (10) of each, one new
   connection each: molen ``GET /api/molen/v1/ui/runs?page=K&size=50&sort=-metrics.m0``;
   MLflow ``POST /api/2.0/mlflow/runs/search`` with ``max_results=50``,
   ``order_by=["metrics.m0 DESC"]`` and for page K its page token. The first page and page K
   (the middle page: 100 of 200 at 10,000 runs), and the first page in the order the pages open
   with (molen ``-start_time``, MLflow ``attributes.start_time DESC``). The run ids of each
   page must be the same for both tools.
3. ``charts``: a run's metric charts, 7 loads (5) of each, as in 1: molen's ``/ui/#/run/ID``,
   MLflow's ``/#/experiments/1/runs/ID/model-metrics`` (the "Model metrics" tab), the run in the
   middle of the start times. A chart counts as drawn when its curve is in the page: molen's
   ``[data-chart^='metric ']`` holding a ``canvas`` whose ECharts instance has the series'
   points (ECharts paints the canvas in the next frame); MLflow's ``.js-plotly-plot`` with a
   ``path.js-line`` of non-empty ``d`` (Plotly's SVG curve). The time is the frame in which the
   last chart the page draws by itself appeared (no scrolling; nothing new for 1.5 s after it):
   molen draws the first 24 metrics' charts at once, MLflow only the charts in and near the
   viewport (lazily, one history request per chart), so the two counts differ (both reported).
   The first chart's frame is reported too.

Targets (the issue's): runs page paint < 1 s, a page from the API < 100 ms, a run's charts
< 500 ms, and molen at least 3x faster than MLflow on each (both must hold for PASS).

The table goes to stdout, progress to stderr, every sample to ``benchmarks/results/ui.json``
(with each page load's frames and the API requests the page made, with their times). molen's
server serves the UI from the working tree, so the commit and a digest of ``src/molen/ui``'s
files are recorded before and after the measurements, and a change in between is reported.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import harness
from bench_server import Server, request, serving
from bench_serving import free_port, mlflow_env
from bench_tracking import MOLEN_PYTHON, machine_facts, median, molen_env
from harness import log as _log
from peers import BENCH_DIR, REPO_ROOT, ensure_mlflow_venv

HERE = Path(__file__).resolve().parent
PEER = HERE / "mlflow_ui_peer.py"
RESULTS = HERE / "results" / "ui.json"
BENCHMARKS = ("paint", "api", "charts")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXPERIMENT = "bench"
LAYOUT = 1  # the population's version: a kept store of another version is rebuilt
BASE_TIME = 1_767_225_600_000  # 2026-01-01 00:00 UTC (ms); run i starts i seconds later
BYTES_PER_VALUE = 118 + 236  # measured: molen's SQLite store, MLflow's (with its three indexes)
PAGE = 50
QUIET = 1.5  # seconds without a new chart after which a run page counts as done
LOAD_TIMEOUT = 120_000  # ms
MOLEN_PROBE = ("POST", "/api/molen/v1/store/list_experiments", b"{}")
MLFLOW_PROBE = ("POST", "/api/2.0/mlflow/experiments/search", b'{"max_results": 1}')
VIEWPORT = {"width": 1400, "height": 900}


def log(message: str) -> None:
    _log(f"ui: {message}")


@dataclass(frozen=True)
class Plan:
    """The store and how many times each figure is measured (full or --quick)."""

    runs: int = 10_000
    params: int = 5
    metrics: int = 50
    steps: int = 100
    page_loads: int = 7
    requests: int = 25


FULL = Plan()
QUICK = Plan(runs=500, page_loads=5, requests=10)


# -- the stores ---------------------------------------------------------------------------------------


def run_id_of(index: int) -> str:
    """The id of run ``index`` (random-looking, as uuid4, but the same in every build)."""
    return uuid.UUID(int=random.Random(-1 - index).getrandbits(128)).hex


def run_values(index: int, plan: Plan) -> tuple[dict[str, str], list[tuple[str, float, int, int]]]:
    """The params and the (key, value, step, timestamp) of every metric value of run ``index``:
    falling curves with noise, a level for each run and metric (seeded by ``index``)."""
    rng = random.Random(index)
    params = {
        f"p{j}": str(rng.choice((1, 2, 4, 8, 16))) if j % 2 else str(round(rng.uniform(0.001, 1), 4))
        for j in range(plan.params)
    }
    start = BASE_TIME + index * 1000
    values: list[tuple[str, float, int, int]] = []
    for j in range(plan.metrics):
        level, key = rng.uniform(0.5, 2.0), f"m{j}"
        for step in range(plan.steps):
            values.append((key, level / (1 + 0.1 * step) + rng.gauss(0, 0.01), step, start + 1 + 5 * step))
    return params, values


def populate_molen(path: Path, plan: Plan) -> None:
    """``plan.runs`` finished runs in experiment ``bench`` of a new molen SQLite store."""
    from molen.entities import Metric
    from molen.stores.metadata.sql import SqlMetadataStore

    store = SqlMetadataStore(f"sqlite:///{path}")
    experiment = store.get_or_create_experiment(EXPERIMENT).id
    started = time.perf_counter()
    for index in range(plan.runs):
        run_id, start = run_id_of(index), BASE_TIME + index * 1000
        params, values = run_values(index, plan)
        store.create_run(run_id=run_id, experiment_id=experiment, name=f"run-{index:05d}", start_time=start)
        store.log_batch(
            run_id, params=params, metrics=[Metric(*v) for v in values], end=("FINISHED", start + 600)
        )
        if (index + 1) % 1000 == 0 or index + 1 == plan.runs:
            spent = time.perf_counter() - started
            left = spent / (index + 1) * (plan.runs - index - 1)
            log(f"molen store: {index + 1:,} of {plan.runs:,} runs in {spent:.0f} s ({left:.0f} s to go)")
    store.close()


def build_mlflow(molen_db: Path, mlflow_db: Path, artifacts: Path, mlflow_python: Path) -> None:
    """MLflow's schema made by MLflow, then the molen store's runs copied into it with SQL."""
    upgrade = [str(mlflow_python.parent / "mlflow"), "db", "upgrade", f"sqlite:///{mlflow_db}"]
    done = subprocess.run(upgrade, env=mlflow_env(mlflow_python), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mlflow db upgrade failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    root = artifacts.resolve().as_uri()
    user = "coalesce(\"user\", 'bench')"
    steps: list[tuple[str, str, tuple[str, ...]]] = [
        (
            "experiments",
            "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
            "creation_time, last_update_time, workspace) SELECT id, name, ? || '/' || id, 'active', "
            "created_at, created_at, 'default' FROM m.experiments",
            (root,),
        ),
        (
            "experiment_tags",
            "INSERT INTO experiment_tags (key, value, experiment_id) "
            "SELECT 'mlflow.experimentKind', 'custom_model_development', id FROM m.experiments",
            (),
        ),
        (
            "runs",
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
            "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
            f"SELECT id, name, 'UNKNOWN', '', '', {user}, status, start_time, end_time, '', 'active', "
            "? || '/' || experiment_id || '/' || id || '/artifacts', experiment_id FROM m.runs",
            (root,),
        ),
        (
            "tags",
            "INSERT INTO tags (key, value, run_uuid) SELECT 'mlflow.runName', name, id FROM m.runs "
            f"UNION ALL SELECT 'mlflow.user', {user}, id FROM m.runs "
            "UNION ALL SELECT 'mlflow.source.type', 'LOCAL', id FROM m.runs",
            (),
        ),
        ("params", "INSERT INTO params (key, value, run_uuid) SELECT key, value, run_id FROM m.params", ()),
        (
            "latest_metrics",
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
            "SELECT key, value, timestamp, step, 0, run_id FROM m.latest_metrics",
            (),
        ),
        (
            "metrics",  # in the order they were logged: run by run, so the time grows
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
            "SELECT key, value, timestamp, run_id, step, 0 FROM m.metrics ORDER BY rowid",
            (),
        ),
    ]
    db = sqlite3.connect(mlflow_db, isolation_level=None)
    try:
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-1000000"):
            db.execute(f"PRAGMA {pragma}")
        db.execute("ATTACH DATABASE ? AS m", (f"file:{molen_db}?mode=ro",))
        for table, sql, args in steps:
            started = time.perf_counter()
            db.execute("BEGIN")
            db.execute(sql, args)
            db.execute("COMMIT")
            log(f"MLflow store: {table} copied in {time.perf_counter() - started:.1f} s")
        db.execute("DETACH DATABASE m")
        db.execute("ANALYZE")
    finally:
        db.close()


def check_mlflow(folder: Path, plan: Plan, mlflow_python: Path) -> dict[str, Any]:
    """Read the MLflow store back with MLflow's client and compare with molen's store."""
    from molen.stores.metadata.sql import SqlMetadataStore

    index = plan.runs // 2
    run_id, key = run_id_of(index), "m7"
    cmd = [str(mlflow_python), str(PEER), "check", "--store", f"sqlite:///{folder / 'mlflow.db'}"]
    cmd += ["--experiment", EXPERIMENT, "--run", run_id, "--key", key]
    done = subprocess.run(cmd, env=mlflow_env(mlflow_python), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"MLflow could not read its store back: {done.stderr[-3000:]}")
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    store = SqlMetadataStore(f"sqlite:///{folder / 'molen.db'}")
    try:
        from molen.query import parse_sort

        top = [r.id for r in store.search_runs(sort=parse_sort("-metrics.m0"), limit=5)]
        history = [[m.step, m.value, m.timestamp] for m in store.metric_history(run_id, key)]
        ours = {
            "runs": store.count_runs(),
            "top_by_m0": top,
            "params": store.get_run(run_id).params,
            "history": history,
        }
    finally:
        store.close()
    problems = [
        name
        for name, same in (
            ("number of runs", theirs["runs"] == ours["runs"] == plan.runs),
            ("statuses", theirs["statuses"] == ["FINISHED"]),
            ("first runs by metrics.m0", theirs["top_by_m0"] == ours["top_by_m0"]),
            ("run name", theirs["run_name"] == f"run-{index:05d}"),
            ("params", theirs["params"] == ours["params"]),
            ("latest metrics", theirs["latest_metrics"] == plan.metrics),
            ("metric history", theirs["history"] == ours["history"] and len(ours["history"]) == plan.steps),
        )
        if not same
    ]
    if problems:
        raise RuntimeError(f"the MLflow store does not read back as molen's: {', '.join(problems)}")
    log(
        f"MLflow's client reads back {theirs['runs']:,} runs; run {run_id[:8]} {key}: "
        f"{plan.steps} values, the same"
    )
    return {
        "runs": theirs["runs"],
        "checked_run": run_id,
        "checked_key": key,
        "top_by_m0": theirs["top_by_m0"],
    }


def store_bytes(plan: Plan) -> int:
    return plan.runs * plan.metrics * plan.steps * BYTES_PER_VALUE


@contextlib.contextmanager
def stores(plan: Plan, keep: bool, mlflow_python: Path, facts: dict[str, Any]) -> Iterator[Path]:
    """The folder ``.bench/ui-store-N`` with both stores: reused when a kept one of the same
    layout is there, else filled; removed at the end unless ``keep``."""
    folder = BENCH_DIR / f"ui-store-{plan.runs}"
    stamp = folder / "ready.json"
    wanted = {"layout": LAYOUT, "runs": plan.runs, "params": plan.params, "metrics": plan.metrics}
    wanted["steps"] = plan.steps
    found = json.loads(stamp.read_text()) if stamp.exists() else {}
    if found.get("plan") == wanted:
        log(f"reusing the stores kept in {folder} ({size_of(folder) / 1e9:.1f} GB)")
        facts["stores"] = {**found, "reused": True}
    else:
        if folder.exists():
            log(f"removing the incomplete or outdated {folder}")
            shutil.rmtree(folder)
        free = shutil.disk_usage(BENCH_DIR).free
        need = store_bytes(plan) * 1.02 + 5e8
        if free < need:
            raise SystemExit(
                f"bench_ui: {plan.runs:,} runs need about {need / 1e9:.1f} GB for the two stores; "
                f"{free / 1e9:.1f} GB free under {BENCH_DIR}. Try --runs or --quick."
            )
        folder.mkdir(parents=True)
        started = time.perf_counter()
        populate_molen(folder / "molen.db", plan)
        molen_seconds = time.perf_counter() - started
        build_mlflow(folder / "molen.db", folder / "mlflow.db", folder / "mlartifacts", mlflow_python)
        mlflow_seconds = time.perf_counter() - started - molen_seconds
        checked = check_mlflow(folder, plan, mlflow_python)
        found = {
            "plan": wanted,
            "fill_seconds": {"molen": molen_seconds, "mlflow": mlflow_seconds},
            "bytes": {name: (folder / name).stat().st_size for name in ("molen.db", "mlflow.db")},
            "check": checked,
        }
        stamp.write_text(json.dumps(found, indent=2) + "\n")
        log(
            f"stores filled in {molen_seconds:.0f} s (molen) + {mlflow_seconds:.0f} s (MLflow copy): "
            f"{size_of(folder) / 1e9:.1f} GB"
        )
        facts["stores"] = {**found, "reused": False}
    try:
        yield folder
    finally:
        if keep:
            log(
                f"kept {folder} ({size_of(folder) / 1e9:.1f} GB); "
                f"the next run with --runs {plan.runs} reuses it"
            )
        else:
            log(f"removing {folder}")
            shutil.rmtree(folder, ignore_errors=True)


def ui_state() -> dict[str, Any]:
    """The commit and a digest of the UI's files as served now (``molen server`` serves them
    from the working tree, so uncommitted edits count)."""
    import hashlib

    ui = REPO_ROOT / "src" / "molen" / "ui"
    digest = hashlib.sha256()
    for path in sorted([ui / "api.py", *(ui / "static").glob("*.*")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", str(ui)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    return {
        "commit": head.stdout.strip(),
        "uncommitted": [line[3:] for line in dirty.stdout.splitlines()],
        "digest": digest.hexdigest()[:16],
    }


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- the servers --------------------------------------------------------------------------------------


@contextlib.contextmanager
def started(
    label: str, cmd: list[str], env: dict[str, str], port: int, probe: tuple[str, str, bytes], output: Path
) -> Iterator[Server]:
    """``serving`` of ``bench_server.py``, then SIGKILL for what is left of the process group
    (``mlflow ui`` starts job consumers of its own in the group)."""
    pgid = 0
    scratch: set[str] = set()
    try:
        with serving(label, cmd, env, port, probe, output) as server:
            pgid = server.process.pid
            scratch.update(huey_folders(pgid))
            yield server
            scratch.update(huey_folders(pgid))
    finally:
        if pgid and group_pids(pgid):
            log(f"{label}: SIGKILL for {len(group_pids(pgid))} processes left after SIGTERM")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        for folder in scratch:  # the job queue mlflow ui makes in /dev/shm and leaves behind
            shutil.rmtree(folder, ignore_errors=True)


def huey_folders(pgid: int) -> set[str]:
    """The folders of MLflow's job queue (``_MLFLOW_HUEY_STORAGE_PATH`` of its processes)."""
    found = set()
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError):
            for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                if entry.startswith(b"_MLFLOW_HUEY_STORAGE_PATH="):
                    path = entry.split(b"=", 1)[1].decode()
                    if path.startswith(("/dev/shm/tmp", "/tmp/tmp")):
                        found.add(path)
    return found


def group_pids(pgid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                found.append(int(stat.parent.name))
    return found


def group_cpu(pgid: int) -> float:
    """CPU seconds used so far by the processes of group ``pgid``."""
    total = 0.0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_idle(running: dict[str, Server], limit: float = 120.0) -> float:
    """Wait until the servers' process groups use < 5 % of a core over 2 s (``mlflow ui`` starts
    its job consumers after it answers); the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        before = sum(group_cpu(s.process.pid) for s in running.values())
        time.sleep(2.0)
        if sum(group_cpu(s.process.pid) for s in running.values()) - before < 0.1:
            break
    return time.perf_counter() - started


@contextlib.contextmanager
def servers(folder: Path, work: Path, mlflow_python: Path) -> Iterator[dict[str, Server]]:
    """molen's and MLflow's servers on the two stores, both up until the end."""
    molen_port, mlflow_port = free_port(), free_port()
    molen_cmd = [str(MOLEN_PYTHON.parent / "molen"), "server", "--store", f"sqlite:///{folder / 'molen.db'}"]
    molen_cmd += ["--artifacts", str(work / "molen-objects"), "--port", str(molen_port)]
    mlflow_cmd = [str(mlflow_python.parent / "mlflow"), "ui", "--backend-store-uri"]
    mlflow_cmd += [
        f"sqlite:///{folder / 'mlflow.db'}",
        "--default-artifact-root",
        str(folder / "mlartifacts"),
    ]
    mlflow_cmd += ["--host", "127.0.0.1", "--port", str(mlflow_port)]
    with (
        started("molen", molen_cmd, molen_env(), molen_port, MOLEN_PROBE, work / "molen.log") as molen,
        started(
            "MLflow", mlflow_cmd, mlflow_env(mlflow_python), mlflow_port, MLFLOW_PROBE, work / "mlflow.log"
        ) as mlflow,
    ):
        log(
            f"molen on port {molen.port} (up in {molen.api_seconds:.1f} s), "
            f"MLflow on port {mlflow.port} (up in {mlflow.api_seconds:.1f} s)"
        )
        running = {"molen": molen, "mlflow": mlflow}
        waited = wait_idle(running)
        log(f"servers idle after {waited:.0f} s more")
        yield running


# -- the browser --------------------------------------------------------------------------------------

#: Runs in every page before its own scripts: checks the page each animation frame and records
#: ``[count, performance.now()]`` whenever the number of matching things grows.
WATCH = """
(() => {
  const kind = %s;
  const drawn = new WeakSet();  // a chart found drawn is not looked at again
  const once = (e, yes) => { if (yes) drawn.add(e); return yes; };
  const visible = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const counters = {
    "molen-rows": () => [...document.querySelectorAll("#runs-table .tabulator-row")].filter(visible).length,
    "mlflow-rows": () => [...document.querySelectorAll(".ag-row")]
        .filter((r) => r.querySelector("a[href*='/runs/']") && visible(r)).length,
    "molen-charts": () => [...document.querySelectorAll("[data-chart^='metric ']")].filter((d) => {
        if (drawn.has(d)) return true;
        if (!d.querySelector("canvas") || !window.echarts) return false;
        const chart = window.echarts.getInstanceByDom(d);
        const series = chart && chart.getOption() && chart.getOption().series;
        return once(d, !!(series && series.length && series[0].data && series[0].data.length));
      }).length,
    "mlflow-charts": () => [...document.querySelectorAll(".js-plotly-plot")].filter((p) => drawn.has(p) ||
        once(p, [...p.querySelectorAll("path.js-line")].some((l) => (l.getAttribute("d") || "").length > 2))
      ).length,
  };
  const count = counters[kind];
  const seen = { count: 0, events: [] };
  window.__bench = seen;
  const look = (now) => {
    let n = 0;
    try { n = count(); } catch (_) { n = 0; }
    if (n > seen.count) { seen.count = n; seen.events.push([n, now]); }
    requestAnimationFrame(look);
  };
  requestAnimationFrame(look);
})();
"""


class Browser:
    """Headless Chromium; one fresh context per page load."""

    def __init__(self, playwright: Any) -> None:
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        self.version = self.browser.version

    def load(self, url: str, kind: str, *, settle: float = 0.0) -> dict[str, Any]:
        """Open ``url`` in a fresh context; the frames in which the ``kind`` counter grew (ms from
        navigation start), the wall time to the first, and the API requests the page made."""
        context = self.browser.new_context(viewport=VIEWPORT)
        context.add_init_script(WATCH % json.dumps(kind))
        page = context.new_page()
        calls: list[dict[str, Any]] = []
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)[:300]))

        def finished(req: Any) -> None:
            if "/api/" in req.url or "/ajax-api/" in req.url:
                timing = req.timing
                path = urllib.parse.urlsplit(req.url)
                calls.append(
                    {
                        "method": req.method,
                        "path": path.path + ("?" + path.query if path.query else ""),
                        "start_ms": timing.get("startTime", 0.0),
                        "ms": timing.get("responseEnd", -1.0),
                    }
                )

        page.on("requestfinished", finished)
        try:
            started = time.perf_counter()
            page.goto(url, wait_until="commit", timeout=LOAD_TIMEOUT)
            page.wait_for_function(
                "window.__bench && window.__bench.count > 0", timeout=LOAD_TIMEOUT, polling=20
            )
            wall = time.perf_counter() - started
            if settle:  # wait until nothing new for `settle` seconds
                last, quiet_since = -1, time.perf_counter()
                while True:
                    seen = page.evaluate("[window.__bench.count, performance.now()]")
                    if seen[0] != last:
                        last, quiet_since = seen[0], time.perf_counter()
                    elif time.perf_counter() - quiet_since >= settle:
                        break
                    time.sleep(0.1)
            events = page.evaluate("window.__bench.events")
            origin = page.evaluate("performance.timeOrigin")
        finally:
            context.close()
        origin_ms = float(origin)
        return {
            "first_ms": events[0][1],
            "last_ms": events[-1][1],
            "count": events[-1][0],
            "events": events,
            "wall_to_selector": wall,
            "api_calls": [
                {**c, "start_ms": round(c["start_ms"] - origin_ms, 1) if c["start_ms"] else None}
                for c in calls
            ],
            "page_errors": errors,
        }


# -- the measurements ---------------------------------------------------------------------------------


@dataclass
class Context:
    """What every benchmark needs."""

    plan: Plan
    servers: dict[str, Server]
    browser: Browser
    urls: dict[str, dict[str, str]] = field(default_factory=dict)
    run_id: str = ""


def page_loads(
    ctx: Context, page: str, kinds: dict[str, str], settle: float
) -> dict[str, list[dict[str, Any]]]:
    """``plan.page_loads`` loads of ``page`` for each tool, alternating, after one untimed load each."""
    found: dict[str, list[dict[str, Any]]] = {"molen": [], "mlflow": []}
    for tool in found:
        ctx.browser.load(ctx.urls[tool][page], kinds[tool], settle=settle)  # warm-up
    for repeat in range(ctx.plan.page_loads):
        for tool in found:
            sample = ctx.browser.load(ctx.urls[tool][page], kinds[tool], settle=settle)
            found[tool].append(sample)
            log(
                f"{page} {repeat + 1}/{ctx.plan.page_loads} {tool}: first {sample['first_ms']:.0f} ms, "
                f"{sample['count']} at {sample['last_ms']:.0f} ms"
            )
    return found


def bench_paint(ctx: Context, raw: dict[str, Any]) -> list[Row]:
    found = page_loads(ctx, "runs", {"molen": "molen-rows", "mlflow": "mlflow-rows"}, settle=0.0)
    raw["paint"] = found
    molen = median([s["first_ms"] / 1000 for s in found["molen"]])
    mlflow = median([s["first_ms"] / 1000 for s in found["mlflow"]])
    walls = {t: median([s["wall_to_selector"] for s in found[t]]) for t in found}
    slowest = slowest_calls(found["molen"])
    return [
        compare_row(
            "runs page: first row painted (fresh Chromium context)",
            molen,
            mlflow,
            1.0,
            f"median of {ctx.plan.page_loads} loads; frame with the first table row, from navigation start; "
            f"wall time goto -> selector {secs(walls['molen'])} / {secs(walls['mlflow'])}; "
            f"molen's slowest API calls {slowest}",
        )
    ]


def bench_charts(ctx: Context, raw: dict[str, Any]) -> list[Row]:
    found = page_loads(ctx, "run", {"molen": "molen-charts", "mlflow": "mlflow-charts"}, settle=QUIET)
    raw["charts"] = found
    last = {t: median([s["last_ms"] / 1000 for s in found[t]]) for t in found}
    first = {t: median([s["first_ms"] / 1000 for s in found[t]]) for t in found}
    counts = {t: sorted({s["count"] for s in found[t]}) for t in found}
    return [
        compare_row(
            "a run's metric charts drawn (fresh context)",
            last["molen"],
            last["mlflow"],
            0.5,
            f"median of {ctx.plan.page_loads} loads; frame in which the last chart the page draws by itself "
            f"appeared: molen {counts['molen']} charts, MLflow {counts['mlflow']} (the ones in view); "
            f"molen's slowest API calls {slowest_calls(found['molen'], ctx.run_id)}",
        ),
        compare_row("  first chart drawn", first["molen"], first["mlflow"], None, ""),
    ]


def search_body(order: str, offset: int) -> bytes:
    body: dict[str, Any] = {"experiment_ids": ["1"], "max_results": PAGE, "order_by": [order]}
    if offset:
        body["page_token"] = base64.b64encode(json.dumps({"offset": offset}).encode()).decode()
    return json.dumps(body).encode()


def api_pages(ctx: Context) -> dict[str, dict[str, tuple[str, str, bytes | None]]]:
    """The requests of one page of the table: the first and the middle page by ``metrics.m0``
    descending, and the first page by start time (each page's own default order)."""
    middle = max(2, -(-ctx.plan.runs // PAGE) // 2)
    ui = "/api/molen/v1/ui/runs"
    return {
        "first page by metrics.m0": {
            "molen": ("GET", f"{ui}?page=1&size={PAGE}&sort=-metrics.m0", None),
            "mlflow": ("POST", "/api/2.0/mlflow/runs/search", search_body("metrics.m0 DESC", 0)),
        },
        f"page {middle} by metrics.m0": {
            "molen": ("GET", f"{ui}?page={middle}&size={PAGE}&sort=-metrics.m0", None),
            "mlflow": (
                "POST",
                "/api/2.0/mlflow/runs/search",
                search_body("metrics.m0 DESC", (middle - 1) * PAGE),
            ),
        },
        "first page by start time (default)": {
            "molen": ("GET", f"{ui}?page=1&size={PAGE}&sort=-start_time", None),
            "mlflow": ("POST", "/api/2.0/mlflow/runs/search", search_body("attributes.start_time DESC", 0)),
        },
    }


def ids_of(tool: str, body: bytes) -> list[str]:
    found = json.loads(body)
    if tool == "molen":
        return [r["id"] for r in found["rows"]]
    return [r["info"]["run_id"] for r in found.get("runs", [])]


def bench_api(ctx: Context, raw: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    raw["api"] = {}
    for label, calls in api_pages(ctx).items():
        times: dict[str, list[float]] = {"molen": [], "mlflow": []}
        ids: dict[str, list[str]] = {}
        for tool, call in calls.items():  # warm-up, and the pages' ids compared
            status, _, body = request(ctx.servers[tool].port, *call, timeout=120)
            if status != 200:
                raise RuntimeError(f"{tool} {call[1]}: HTTP {status}: {body[:300]!r}")
            ids[tool] = ids_of(tool, body)
        same = ids["molen"] == ids["mlflow"] and len(ids["molen"]) == min(PAGE, ctx.plan.runs)
        for _ in range(ctx.plan.requests):
            for tool, call in calls.items():
                started = time.perf_counter()
                status, _, body = request(ctx.servers[tool].port, *call, timeout=120)
                times[tool].append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"{tool} {call[1]}: HTTP {status}")
        raw["api"][label] = {
            "requests": {t: [c[0], c[1], (c[2] or b"").decode()] for t, c in calls.items()},
            "seconds": times,
            "same_runs": same,
            "bytes": len(body),
        }
        molen, mlflow = median(times["molen"]), median(times["mlflow"])
        log(f"api {label}: molen {secs(molen)}, MLflow {secs(mlflow)}, same runs: {same}")
        row = compare_row(
            f"API: {label}, {PAGE} runs",
            molen,
            mlflow,
            0.1,
            f"median of {ctx.plan.requests}; p90 {secs(p90(times['molen']))} / {secs(p90(times['mlflow']))}"
            + ("" if same else "; THE TWO PAGES HOLD DIFFERENT RUNS"),
        )
        if not same:
            row.passed = False
        rows.append(row)
    return rows


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def slowest_calls(samples: list[dict[str, Any]], ctx_run_id: str = "") -> str:
    """The slowest API calls of a page (median over the loads), for the notes."""
    spent: dict[str, list[float]] = {}
    for sample in samples:
        for call in sample["api_calls"]:
            name = call["path"].split("?")[0].rsplit("/v1/", 1)[-1]
            if ctx_run_id:
                name = name.replace(ctx_run_id, "ID")
            spent.setdefault(name, []).append(call["ms"])
    ranked = sorted(((median(v), k) for k, v in spent.items()), reverse=True)[:3]
    return ", ".join(f"{k} {v:.0f} ms" for v, k in ranked) or "none"


# -- the table ----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table (cells formatted; numbers in ``values``)."""

    benchmark: str
    molen: str
    mlflow: str
    ratio: str
    target: str
    passed: bool | None
    note: str = ""
    values: dict[str, Any] = field(default_factory=dict)


def secs(value: float | None) -> str:
    if value is None:
        return "-"
    return (
        f"{value * 1000:,.1f} ms"
        if value < 0.1
        else f"{value * 1000:,.0f} ms"
        if value < 1
        else f"{value:,.2f} s"
    )


def compare_row(name: str, molen: float, mlflow: float, target: float | None, note: str) -> Row:
    """A row with molen's and MLflow's medians, the ratio MLflow/molen and, with a ``target``
    (seconds), the verdict: molen under it and at least 3x faster."""
    ratio = mlflow / molen if molen > 0 else float("inf")
    passed = None if target is None else molen < target and ratio >= 3
    return Row(
        name,
        secs(molen),
        secs(mlflow),
        f"{ratio:.1f}x",
        "-" if target is None else f"< {secs(target)}, >= 3x",
        passed,
        note,
        {"molen": molen, "mlflow": mlflow, "ratio": ratio, "target": target},
    )


def table(rows: list[Row]) -> str:
    return harness.table(
        ["benchmark", "molen", "MLflow", "ratio", "target", "pass"],
        [[r.benchmark, r.molen, r.mlflow, r.ratio, r.target, harness.verdict(r.passed)] for r in rows],
    )


def header(facts: dict[str, Any], date: str, quick: bool, plan: Plan) -> str:
    return "\n".join(
        [
            *harness.heading("web-UI", date, quick, facts),
            f"python {facts['python']}, molen {facts['molen']}, MLflow {facts['mlflow']}, "
            f"SQLite {facts['sqlite']}, {facts['chromium']}",
            f"store: {plan.runs:,} runs x {plan.metrics} metrics x {plan.steps} steps "
            f"({plan.runs * plan.metrics * plan.steps:,} metric values), {plan.params} params a run",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark molen's web UI against mlflow ui.")
    harness.standard_options(
        parser,
        results=RESULTS,
        quick="500 runs, fewer repetitions (a few minutes)",
        keep="keep the stores in .bench/ui-store-N (reused by the next run) and the server logs",
        only=BENCHMARKS,
    )
    parser.add_argument("--runs", type=int, help="runs in the stores (default 10,000; --quick 500)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = Plan(**{**asdict(plan), "runs": args.runs})
    if not Path(CHROMIUM).exists():
        parser.error("needs Chromium: scripts/bootstrap.sh --browser installs it")
    started = time.perf_counter()
    date = harness.now()
    mlflow_python = ensure_mlflow_venv()
    facts = machine_facts(mlflow_python)
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=False)
    facts["chromium"] = version.stdout.strip() or "?"
    print(header(facts, date, args.quick, plan), flush=True)

    from playwright.sync_api import sync_playwright

    raw: dict[str, Any] = {}
    benches = {"paint": bench_paint, "api": bench_api, "charts": bench_charts}
    with (
        stores(plan, args.keep, mlflow_python, facts) as folder,
        harness.work_folder("ui", args.keep, log) as work,
        servers(folder, work, mlflow_python) as running,
        sync_playwright() as playwright,
    ):
        browser = Browser(playwright)
        run_id = run_id_of(plan.runs // 2)
        base = {t: f"http://127.0.0.1:{s.port}" for t, s in running.items()}
        ctx = Context(plan, running, browser, run_id=run_id)
        ctx.urls = {
            "molen": {"runs": f"{base['molen']}/ui/", "run": f"{base['molen']}/ui/#/run/{run_id}"},
            "mlflow": {
                "runs": f"{base['mlflow']}/#/experiments/1/runs",
                "run": f"{base['mlflow']}/#/experiments/1/runs/{run_id}/model-metrics",
            },
        }
        raw["urls"] = ctx.urls
        facts["ui_before"] = ui_state()
        rows = harness.run_selected(benches, args.only, (ctx,), raw, log)
        facts["ui_after"] = ui_state()
        browser.browser.close()
        raw["servers"] = {t: {"startup_seconds": s.api_seconds} for t, s in running.items()}
    runtime = time.perf_counter() - started

    legend = "ratio: MLflow's time / molen's"
    before, after = facts["ui_before"], facts["ui_after"]
    legend += f"\nmolen's UI as served: commit {before['commit']}, files {before['digest']}"
    if before["uncommitted"]:
        legend += f" (uncommitted changes in {', '.join(before['uncommitted'])})"
    if after["digest"] != before["digest"]:
        legend += f"; CHANGED DURING THE RUN to {after['digest']}: the figures mix two versions"
    harness.report(table(rows), rows, runtime, legend=legend)
    harness.write_results(
        args.output, harness.document(date, args.quick, facts, plan, runtime, rows, raw), log
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

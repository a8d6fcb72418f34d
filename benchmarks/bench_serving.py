"""Serving benchmark: ``molen serve`` against ``mlflow models serve`` and a bare FastAPI floor.

Usage::

    .venv/bin/python benchmarks/bench_serving.py [--quick] [--only NAME ...] [--output PATH] [--keep]

One model for all three servers: a scikit-learn ``LogisticRegression`` on 20 numeric features,
fitted here (molen's python) on a pandas DataFrame with columns ``f0``..``f19`` (5,000 seeded
rows), so every server gets named columns. It is logged into a fresh molen project
(``molen init`` + ``git init`` + one commit, as ``bench_tracking.py`` makes them) as ``lr/1``
with ``reference=X``, and pickled to a file that the MLflow peer
(``benchmarks/mlflow_models_peer.py``, MLflow's venv from ``benchmarks/peers.py``; both venvs
have the same scikit-learn, NumPy and pandas, checked) saves with ``mlflow.sklearn.save_model``
in MLflow's default serialization (skops), and that the floor loads.

The three servers, started one at a time on a free port of 127.0.0.1, each waited for
(``/health``; MLflow ``/ping``) and stopped with SIGTERM (to its process group) and a wait:

* molen: ``molen serve lr/1 --port P --no-log`` (prediction log only where a row says so),
  from the project folder; ``POST /predict`` with a JSON list of row objects.
* MLflow: ``mlflow models serve -m PATH --env-manager local -p P --host 127.0.0.1``;
  ``POST /invocations`` with ``{"dataframe_records": [...]}``.
* floor: ``benchmarks/serving_floor.py``, a bare FastAPI app under the same uvicorn settings
  as molen (one worker, uvloop + httptools, log level warning, no access log) whose
  ``POST /predict`` does orjson parse -> ``pandas.DataFrame(rows)`` -> ``model.predict`` ->
  orjson list. Its ``/predict`` computes no probabilities; molen's also answers
  ``predict_proba`` (the issue's floor, kept as specified).

floor, molen and MLflow are up together for benchmarks 1-3 (an idle server costs nothing): the
sequential requests go to them in alternating blocks (``rounds``, 5; the order rotates each
round) so that the machine's other load, which moves on a shared machine, falls on all three
alike; each throughput run loads one server alone. All load comes from a separate process,
``benchmarks/serving_load.py`` (molen's python), over loopback: ``seq`` mode (``http.client``,
one kept-alive connection) or ``load`` mode (asyncio + uvloop, a minimal HTTP/1.1 client on C
kept-alive connections; it reports its own CPU per request so that it is visible it is not the
bottleneck). Server CPU time is psutil's ``cpu_times`` (user + system) of the server process
and its children, taken by the load process around its timed requests.

Benchmarks (``--only``) and the issue's targets:

1. ``latency``: 1,000 sequential single-row requests (5 blocks of 200, after 200 untimed, then
   20 per block): p50 and p99, and the server CPU time per request over those 1,000. CPU <=
   1.3x the floor; p50 <= 1.3x the floor and <= 0.5x MLflow.
2. ``throughput``: concurrency 32 for 20 s (5 s with ``--quick``) after 1 s of warm-up,
   single-row requests: requests/s >= 2x MLflow (the floor measured too).
3. ``big``: one request of 1,000 rows, median of 30 (5 blocks of 6, after 3 untimed, then 1
   per block): <= 1.3x the floor.
4. ``logging``: throughput as in 2 with the prediction log on (``--log-dir`` in the work
   folder): at most 10% below molen's without it (measured again right before it, so the two
   runs are adjacent); the rows in the log after SIGTERM are reported against the rows answered.
5. ``workers``: ``--workers 2``, sequential single-row latency as in 1, alternating with a
   one-worker server: p50 about that of one worker (<= 1.5x; a stall on kept-alive connections
   would add ~40 ms).
6. ``soak``: concurrency 64 for 60 s (15 s with ``--quick``) with the prediction log on (the
   project's ``.molen/log``): no errors; RSS of the server processes flat (the largest sample
   of the last quarter <= 1.1x the largest of the first quarter); after SIGTERM the log holds
   exactly the rows answered (``read_log(.., "predictions", "lr").num_rows``).

The table goes to stdout, progress to stderr, every sample to ``benchmarks/results/serving.json``.
Projects, packages and server output live under ``.bench/tmp/`` (removed unless ``--keep``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from bench_models import inside  # noqa: E402
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
from serving_load import percentile  # noqa: E402

PEER = HERE / "mlflow_models_peer.py"
FLOOR = HERE / "serving_floor.py"
LOAD = HERE / "serving_load.py"
RESULTS = HERE / "results" / "serving.json"
LIBRARIES = ("scikit-learn", "pandas", "numpy")
STACK = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "h11", "orjson")
SEED = 0
FEATURES = 20
TRAIN_ROWS = 5_000
BIG_ROWS = 1_000
MODEL = "lr"
START_TIMEOUT = 120.0  # seconds for a server to answer its health check
STOP_TIMEOUT = 40.0

BENCHMARKS = ("latency", "throughput", "big", "logging", "workers", "soak")


@dataclass(frozen=True)
class Plan:
    """How much of each benchmark to run (full or --quick)."""

    rounds: int = 5  # sequential measurements alternate between the servers in this many blocks
    seq_n: int = 1_000
    seq_warmup: int = 200  # before the first block; later blocks 20
    big_n: int = 30
    big_warmup: int = 3  # before the first block; later blocks 1
    concurrency: int = 32
    throughput_seconds: float = 20.0
    load_warmup_seconds: float = 1.0
    soak_concurrency: int = 64
    soak_seconds: float = 60.0


FULL = Plan()
QUICK = Plan(throughput_seconds=5.0, soak_seconds=15.0)


def log(message: str) -> None:
    _log(f"serving: {message}")


# -- the model and the request bodies ---------------------------------------------------------------


def frame(rows: int, seed: int) -> tuple[Any, Any]:
    """``rows`` rows of 20 seeded numeric features ``f0``..``f19`` and a 0/1 label."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 1.0, (rows, FEATURES)).round(4)
    weights = np.linspace(-1.0, 1.0, FEATURES)
    label = (rng.random(rows) < 1 / (1 + np.exp(-(values @ weights)))).astype("int64")
    return pd.DataFrame(values, columns=[f"f{i}" for i in range(FEATURES)]), label


@dataclass
class Setup:
    """What the benchmarks work on."""

    work: Path
    project: Path
    bundle: Path  # the pickled model, for the floor
    mlflow_model: Path
    bodies: dict[str, Path]  # one / one_mlflow / big / big_mlflow
    expected_big: list[Any]  # the model's predictions for the 1,000-row body
    info: dict[str, Any]


def prepare(work: Path, mlflow_python: Path) -> Setup:
    """Fit, log into a fresh molen project, pickle for the floor, have the MLflow peer save it."""
    from sklearn.linear_model import LogisticRegression

    import molen

    for key in [k for k in os.environ if k.startswith("MOLEN_")]:
        del os.environ[key]  # the project's own settings only, as in molen_env()
    info: dict[str, Any] = {}
    X, y = frame(TRAIN_ROWS, SEED)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    project = Projects(work).molen("serving")
    started = time.perf_counter()
    with inside(project), molen.start_run(experiment="bench", name=MODEL) as run:
        logged = run.log_model(model, MODEL, reference=X)
    info["molen_logged"] = {"uri": logged.uri, "seconds": time.perf_counter() - started}
    log(f"fitted LogisticRegression on {TRAIN_ROWS:,} x {FEATURES}; logged {logged.uri}")
    if logged.uri != f"{MODEL}/1":
        raise RuntimeError(f"expected {MODEL}/1, molen registered {logged.uri}")

    bundle = work / "model.pkl"
    with bundle.open("wb") as handle:
        pickle.dump({"model": model, "example": X.head(3)}, handle, protocol=5)
    log("MLflow peer: mlflow.sklearn.save_model (skops, MLflow's default)")
    cmd = [str(mlflow_python), str(PEER), "save", "--model", str(bundle), "--dir", str(work / "mlflow")]
    saved = run_json(
        [*cmd, "--format", "skops"],
        cwd=REPO_ROOT,
        env={**molen_env(), **TELEMETRY_OFF},
    )
    package = saved["packages"]["skops"]
    info["mlflow_saved"] = package
    ours = {name: metadata.version(name) for name in LIBRARIES}
    theirs = {name: saved["versions"].get(name) for name in LIBRARIES}
    info["versions"] = {"molen_venv": ours, "mlflow_venv": theirs}
    if ours != theirs:
        raise RuntimeError(f"the venvs differ, the pickle would not be the same model: {ours} vs {theirs}")
    if package["skops_trusted_types"]:
        log(f"MLflow skops needed skops_trusted_types={package['skops_trusted_types']}")

    import orjson

    big, _ = frame(BIG_ROWS, SEED + 1)
    rows = big.to_dict(orient="records")
    bodies = {
        "one": orjson.dumps(rows[:1]),
        "one_mlflow": orjson.dumps({"dataframe_records": rows[:1]}),
        "big": orjson.dumps(rows),
        "big_mlflow": orjson.dumps({"dataframe_records": rows}),
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = work / f"body-{name}.json"
        paths[name].write_bytes(body)
    info["body_bytes"] = {name: len(body) for name, body in bodies.items()}
    return Setup(
        work=work,
        project=project,
        bundle=bundle,
        mlflow_model=Path(package["path"]),
        bodies=paths,
        expected_big=model.predict(big).tolist(),
        info=info,
    )


# -- servers ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class Server:
    """A running server: who, where, and which route predicts."""

    label: str
    process: subprocess.Popen[bytes]
    port: int
    path: str  # /predict or /invocations
    one: Path  # the single-row body
    big: Path  # the 1,000-row body
    output: Path
    started_seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def running(
    label: str,
    cmd: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    health: str,
    path: str,
    bodies: tuple[Path, Path],
    port: int,
    output: Path,
) -> Iterator[Server]:
    """Start ``cmd`` in its own process group, wait for ``health``, yield, then SIGTERM and wait."""
    started = time.perf_counter()
    with output.open("wb") as sink:
        process = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(label, process, port, path, bodies[0], bodies[1], output)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{label} exited ({process.returncode}): {tail(output)}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_call(port, "GET", health)[0] == 200:
                    break
            if time.perf_counter() - started > START_TIMEOUT:
                raise RuntimeError(
                    f"{label} did not answer {health} in {START_TIMEOUT:.0f} s: {tail(output)}"
                )
            time.sleep(0.05)
        server.started_seconds = time.perf_counter() - started
        log(f"{label}: up on port {port} in {server.started_seconds:.1f} s (pid {process.pid})")
        yield server
    finally:
        stop(server)


def stop(server: Server) -> None:
    """SIGTERM the server's process group and wait; SIGKILL it if it does not end in time."""
    process = server.process
    started = time.perf_counter()
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log(f"{server.label}: no exit {STOP_TIMEOUT:.0f} s after SIGTERM; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # uvicorn's workers (and MLflow's uvicorn under its CLI) are in the same group: wait them out.
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    server.stats["exit_code"] = process.returncode  # uvicorn re-raises SIGTERM once shut down: -15
    server.stats["stop_seconds"] = time.perf_counter() - started


def tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def mlflow_env(python: Path) -> dict[str, str]:
    """MLflow's venv as if activated: its CLI runs ``uvicorn`` found on ``PATH``."""
    env = {**molen_env(), **TELEMETRY_OFF}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    return env


class Servers:
    """Starting the three kinds of server for a benchmark."""

    def __init__(self, setup: Setup, mlflow_python: Path) -> None:
        self.setup = setup
        self.mlflow_python = mlflow_python
        self.count = 0

    def _output(self, label: str) -> Path:
        self.count += 1
        return self.setup.work / f"server-{self.count:02d}-{label.replace(' ', '-')}.log"

    def molen(self, label: str, *options: str) -> contextlib.AbstractContextManager[Server]:
        port = free_port()
        molen = MOLEN_PYTHON.parent / "molen"
        return running(
            label,
            [str(molen), "serve", f"{MODEL}/1", "--port", str(port), *options],
            cwd=self.setup.project,
            env=molen_env(),
            health="/health",
            path="/predict",
            bodies=(self.setup.bodies["one"], self.setup.bodies["big"]),
            port=port,
            output=self._output(label),
        )

    def mlflow(self) -> contextlib.AbstractContextManager[Server]:
        port = free_port()
        mlflow = self.mlflow_python.parent / "mlflow"
        cmd = [str(mlflow), "models", "serve", "-m", str(self.setup.mlflow_model)]
        cmd += ["--env-manager", "local", "-p", str(port), "--host", "127.0.0.1"]
        return running(
            "MLflow",
            cmd,
            cwd=self.setup.work,
            env=mlflow_env(self.mlflow_python),
            health="/ping",
            path="/invocations",
            bodies=(self.setup.bodies["one_mlflow"], self.setup.bodies["big_mlflow"]),
            port=port,
            output=self._output("mlflow"),
        )

    def floor(self) -> contextlib.AbstractContextManager[Server]:
        port = free_port()
        return running(
            "floor",
            [str(MOLEN_PYTHON), str(FLOOR), "--model", str(self.setup.bundle), "--port", str(port)],
            cwd=HERE,
            env=molen_env(),
            health="/health",
            path="/predict",
            bodies=(self.setup.bodies["one"], self.setup.bodies["big"]),
            port=port,
            output=self._output("floor"),
        )


# -- measurements (each a run of the load process) --------------------------------------------------


def load_process(mode: str, server: Server, body: Path, *args: str) -> dict[str, Any]:
    cmd = [str(MOLEN_PYTHON), str(LOAD), mode, "--port", str(server.port), "--path", server.path]
    cmd += ["--body", str(body), "--pid", str(server.pid), *args]
    found = run_json(cmd, cwd=HERE, env=molen_env())
    server.stats["answered_requests"] = server.stats.get("answered_requests", 0) + found["answered"]
    server.stats["answered_rows"] = server.stats.get("answered_rows", 0) + found["answered"] * (
        BIG_ROWS if body == server.big else 1
    )
    if found["errors"]:
        log(f"{server.label}: {found['errors']} errors, e.g. {found['error_samples'][:2]}")
    return found


def check_predictions(server: Server, expected: list[Any]) -> bool:
    """One 1,000-row request: does the server predict what the model does?"""
    status, body = http_call(server.port, "POST", server.path, server.big.read_bytes())
    if status != 200:
        raise RuntimeError(f"{server.label}: {status} for the 1,000-row body: {body[:500]!r}")
    server.stats["answered_requests"] = server.stats.get("answered_requests", 0) + 1
    server.stats["answered_rows"] = server.stats.get("answered_rows", 0) + BIG_ROWS
    doc = json.loads(body)
    found = doc if isinstance(doc, list) else doc["predictions"]
    same = bool(found == expected)
    if not same:
        log(f"WARNING: {server.label} predicts differently from the model in this process")
    return same


def blocks(kind: str, plan: Plan, group: list[Server]) -> dict[str, dict[str, Any]]:
    """Sequential requests (``kind`` ``seq``: single rows, ``big``: 1,000 rows) to each server of
    ``group``, in ``plan.rounds`` blocks that alternate between the servers (the order rotating
    each round), so that a change in the machine's other load falls on all of them alike."""
    total, warmup, later = (
        (plan.seq_n, plan.seq_warmup, 20) if kind == "seq" else (plan.big_n, plan.big_warmup, 1)
    )
    what = "single-row" if kind == "seq" else f"{BIG_ROWS:,}-row"
    names = ", ".join(server.label for server in group)
    log(f"{names}: {total:,} sequential {what} requests each, in {plan.rounds} alternating blocks")
    found: dict[str, list[dict[str, Any]]] = {server.label: [] for server in group}
    for r in range(plan.rounds):
        n = total // plan.rounds + (1 if r < total % plan.rounds else 0)
        for server in group[r % len(group) :] + group[: r % len(group)]:
            body = server.one if kind == "seq" else server.big
            args = ("--n", str(n), "--warmup", str(warmup if r == 0 else later))
            found[server.label].append(load_process("seq", server, body, *args))
    merged = {label: merge(parts) for label, parts in found.items()}
    for label, m in merged.items():
        log(
            f"{label}: p50 {m['p50'] * 1000:.2f} ms, p99 {m['p99'] * 1000:.2f} ms, "
            f"median {median(m['latencies']) * 1000:.2f} ms, "
            f"server CPU {m['server_cpu_per_request'] * 1e6:.0f} us/request"
        )
    return merged


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure from the blocks of one server: all latencies, CPU over all timed requests."""
    latencies = [x for part in parts for x in part["latencies"]]
    n = sum(part["n"] for part in parts)
    cpu = sum(part["server_cpu"] for part in parts)
    return {
        "n": n,
        "errors": sum(part["errors"] for part in parts),
        "latencies": latencies,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "server_cpu": cpu,
        "server_cpu_per_request": cpu / n,
        "client_cpu_per_request": sum(p["client_cpu_per_request"] * p["n"] for p in parts) / n,
        "blocks": [
            {k: v for k, v in part.items() if k not in ("latencies", "mode")} | {"p50_block": part["p50"]}
            for part in parts
        ],
    }


def throughput(plan: Plan, server: Server, concurrency: int, seconds: float) -> dict[str, Any]:
    log(f"{server.label}: concurrency {concurrency} for {seconds:.0f} s (+{plan.load_warmup_seconds:.0f} s)")
    found = load_process(
        "load",
        server,
        server.one,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(seconds),
        "--warmup",
        str(plan.load_warmup_seconds),
    )
    log(
        f"{server.label}: {found['per_second']:,.0f} requests/s, p50 {found['p50'] * 1000:.1f} ms, "
        f"{found['errors']} errors; load process {found['client_cpu_share'] * 100:.0f}% of a core"
    )
    return found


# -- the benchmark sessions -------------------------------------------------------------------------


def compare(plan: Plan, group: list[Server], setup: Setup, *, seq: bool, bigs: bool) -> dict[str, Any]:
    """The sequential measurements of ``group``, each server's predictions checked first."""
    found: dict[str, Any] = {
        server.label: {
            "started_seconds": server.started_seconds,
            "same_predictions": check_predictions(server, setup.expected_big),
        }
        for server in group
    }
    for kind, wanted in (("seq", seq), ("big", bigs)):
        if wanted:
            for label, merged in blocks(kind, plan, group).items():
                found[label][kind] = merged
    return found


def log_gauges(server: Server) -> dict[str, float]:
    """molen's /metrics: the prediction log's rows written and dropped so far."""
    status, body = http_call(server.port, "GET", "/metrics")
    found = {}
    for line in body.decode().splitlines():
        name, _, value = line.partition(" ")
        if status == 200 and name in ("molen_log_rows_written", "molen_log_rows_dropped"):
            found[name.removeprefix("molen_log_rows_")] = float(value)
    return found


def log_rows(root: Path) -> int:
    from molen.serving.predlog import read_log

    return int(read_log(str(root), "predictions", MODEL).num_rows)


def run_all(plan: Plan, setup: Setup, servers: Servers, only: set[str], raw: dict[str, Any]) -> None:
    seq = bool(only & {"latency"})
    bigs = "big" in only
    load = "throughput" in only
    if seq or bigs or load:
        # All three up at once (an idle server costs nothing): the sequential blocks alternate.
        with contextlib.ExitStack() as stack:
            group = [
                stack.enter_context(servers.floor()),
                stack.enter_context(servers.molen("molen", "--no-log")),
                stack.enter_context(servers.mlflow()),
            ]
            found = compare(plan, group, setup, seq=seq, bigs=bigs)
            if load:
                for server in group:
                    found[server.label]["load"] = throughput(
                        plan, server, plan.concurrency, plan.throughput_seconds
                    )
        raw.update({label.lower(): value for label, value in found.items()})
    if "logging" in only:
        with servers.molen("molen no-log", "--no-log") as server:
            reference = throughput(plan, server, plan.concurrency, plan.throughput_seconds)
        root = setup.work / "log-throughput"
        with servers.molen("molen log", "--log-dir", str(root)) as server:
            found = compare(plan, [server], setup, seq=True, bigs=False)[server.label]
            found["load"] = throughput(plan, server, plan.concurrency, plan.throughput_seconds)
            found["gauges_before_stop"] = log_gauges(server)
        answered = server.stats["answered_rows"]
        found.update(server.stats, reference=reference, log_rows=log_rows(root))
        log(f"molen log: {found['log_rows']:,} rows in the log, {answered:,} answered")
        raw["logging"] = found
    if "workers" in only:
        with (
            servers.molen("molen 1 worker", "--no-log") as one,
            servers.molen("molen 2 workers", "--no-log", "--workers", "2") as two,
        ):
            found = compare(plan, [one, two], setup, seq=True, bigs=False)
        raw["workers"] = {"one": found[one.label], "two": found[two.label]}
    if "soak" in only:
        with servers.molen("molen soak") as server:
            found = {"same_predictions": check_predictions(server, setup.expected_big)}
            found["load"] = throughput(plan, server, plan.soak_concurrency, plan.soak_seconds)
            found["gauges_before_stop"] = log_gauges(server)
        answered = server.stats["answered_rows"]
        found.update(server.stats, log_rows=log_rows(setup.project / ".molen" / "log"))
        log(
            f"soak: {found['log_rows']:,} rows in the log, {answered:,} answered; before SIGTERM the "
            f"log had written {found['gauges_before_stop']}; stop took {found['stop_seconds']:.1f} s"
        )
        raw["soak"] = found


# -- the table ----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table (cells already formatted; numbers in ``values``)."""

    benchmark: str
    molen: str
    mlflow: str
    floor: str
    ratio: str
    target: str
    passed: bool | None
    note: str = ""
    values: dict[str, Any] = field(default_factory=dict)


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:,.2f} ms" if seconds < 0.1 else f"{seconds * 1000:,.0f} ms"


def us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:,.0f} us"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def mb(value: float) -> str:
    return f"{value / 2**20:,.0f} MB"


def written(found: dict[str, Any]) -> str:
    gauges = found.get("gauges_before_stop") or {}
    if not gauges:
        return "no log gauges"
    return f"{gauges.get('written', 0):,.0f} rows written, {gauges.get('dropped', 0):,.0f} dropped"


def build_rows(plan: Plan, raw: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    have = all(k in raw for k in ("molen", "mlflow", "floor"))

    def pick(part: str, name: str) -> tuple[float, float, float]:
        ours, theirs, floor = (float(raw[s][part][name]) for s in ("molen", "mlflow", "floor"))
        return ours, theirs, floor

    if have and "seq" in raw["molen"]:
        ours, theirs, floor = pick("seq", "server_cpu_per_request")
        r = ours / floor
        rows.append(
            Row(
                "server CPU per single-row request",
                us(ours),
                us(theirs),
                us(floor),
                f"{r:.2f}x floor",
                "<=1.3x floor",
                r <= 1.3,
                f"psutil user+system of the server processes over the {plan.seq_n:,} sequential requests; "
                f"MLflow {theirs / ours:.1f}x molen",
                {"molen": ours, "mlflow": theirs, "floor": floor},
            )
        )
        ours, theirs, floor = pick("seq", "p50")
        rf, rm = ours / floor, ours / theirs
        rows.append(
            Row(
                f"single-row p50, {plan.seq_n:,} sequential, kept-alive",
                ms(ours),
                ms(theirs),
                ms(floor),
                f"{rf:.2f}x floor, {rm:.2f}x MLflow",
                "<=1.3x floor, <=0.5x MLflow",
                rf <= 1.3 and rm <= 0.5,
                "molen /predict (answers probabilities too), MLflow /invocations dataframe_records, "
                "floor /predict; load process http.client",
                {"molen": ours, "mlflow": theirs, "floor": floor},
            )
        )
        ours, theirs, floor = pick("seq", "p99")
        rows.append(
            Row(
                "single-row p99",
                ms(ours),
                ms(theirs),
                ms(floor),
                f"{ours / floor:.2f}x floor, {ours / theirs:.2f}x MLflow",
                "-",
                None,
                values={"molen": ours, "mlflow": theirs, "floor": floor},
            )
        )
    if have and "load" in raw["molen"]:
        ours, theirs, floor = pick("load", "per_second")
        r = ours / theirs
        clients = ", ".join(
            f"{s} {raw[s]['load']['client_cpu_per_request'] * 1e6:.0f} us/request "
            f"({raw[s]['load']['client_cpu_share'] * 100:.0f}% of a core)"
            for s in ("molen", "mlflow", "floor")
        )
        server_cpu = ", ".join(
            f"{s} {raw[s]['load']['server_cpu_per_request'] * 1e6:.0f} us"
            for s in ("molen", "mlflow", "floor")
        )
        errors = sum(raw[s]["load"]["errors"] for s in ("molen", "mlflow", "floor"))
        rows.append(
            Row(
                f"throughput, concurrency {plan.concurrency}, {plan.throughput_seconds:.0f} s (requests/s)",
                rate(ours),
                rate(theirs),
                rate(floor),
                f"{r:.1f}x MLflow, {ours / floor:.2f}x floor",
                ">=2x MLflow",
                r >= 2 and errors == 0,
                f"{errors} errors; server CPU per request under load: {server_cpu}; "
                f"load process CPU: {clients}",
                {"molen": ours, "mlflow": theirs, "floor": floor, "errors": errors},
            )
        )
    if have and "big" in raw["molen"]:
        ours, theirs, floor = (median(raw[s]["big"]["latencies"]) for s in ("molen", "mlflow", "floor"))
        r = ours / floor
        cpu = ", ".join(
            f"{s} {raw[s]['big']['server_cpu_per_request'] * 1000:.1f} ms"
            for s in ("molen", "mlflow", "floor")
        )
        rows.append(
            Row(
                f"one request of {BIG_ROWS:,} rows, median of {plan.big_n}",
                ms(ours),
                ms(theirs),
                ms(floor),
                f"{r:.2f}x floor, {ours / theirs:.2f}x MLflow",
                "<=1.3x floor",
                r <= 1.3,
                f"server CPU per request: {cpu}",
                {"molen": ours, "mlflow": theirs, "floor": floor},
            )
        )
    if "logging" in raw:
        found = raw["logging"]
        on, off = found["load"]["per_second"], found["reference"]["per_second"]
        change = on / off - 1
        same = found["log_rows"] == found["answered_rows"]
        cpu_on, cpu_off = (
            found["load"]["server_cpu_per_request"],
            found["reference"]["server_cpu_per_request"],
        )
        rows.append(
            Row(
                f"throughput with the prediction log, concurrency {plan.concurrency} (requests/s)",
                rate(on),
                "-",
                "-",
                f"{change * 100:+.1f}% vs --no-log",
                ">= -10%",
                change >= -0.10 and found["load"]["errors"] == 0,
                f"--no-log run right before: {off:,.0f}/s; server CPU per request under load "
                f"{cpu_on * 1e6:.0f} us with the log, {cpu_off * 1e6:.0f} us without; single-row "
                f"sequential with the log: p50 {ms(found['seq']['p50'])}, CPU "
                f"{us(found['seq']['server_cpu_per_request'])}/request; log rows "
                f"{found['log_rows']:,} for {found['answered_rows']:,} answered"
                + ("" if same else " (MISMATCH)")
                + f"; /metrics right before SIGTERM: {written(found)}",
                {"on": on, "off": off, "change": change},
            )
        )
    if "workers" in raw:
        one, two = raw["workers"]["one"]["seq"], raw["workers"]["two"]["seq"]
        r = two["p50"] / one["p50"]
        rows.append(
            Row(
                "--workers 2: single-row p50, kept-alive",
                ms(two["p50"]),
                "-",
                "-",
                f"{r:.2f}x 1 worker",
                "<=1.5x 1 worker",
                r <= 1.5 and two["errors"] == 0,
                f"1 worker p50 {ms(one['p50'])}, p99 {ms(one['p99'])}; 2 workers p99 {ms(two['p99'])}",
                {"two": two["p50"], "one": one["p50"]},
            )
        )
    if "soak" in raw:
        found = raw["soak"]
        load = found["load"]
        samples = load["rss"]
        quarter = max(1, len(samples) // 4)
        first = max(v for _, v in samples[:quarter])
        last = max(v for _, v in samples[-quarter:])
        growth = last / first
        label = f"soak, concurrency {plan.soak_concurrency}, {plan.soak_seconds:.0f} s, prediction log on"
        rows.append(
            Row(
                f"{label}: errors",
                f"{load['errors']:,}",
                "-",
                "-",
                "-",
                "0",
                load["errors"] == 0,
                f"{load['answered']:,} requests answered, {load['per_second']:,.0f}/s, "
                f"p50 {ms(load['p50'])}, p99 {ms(load['p99'])}",
                {"errors": load["errors"], "answered": load["answered"]},
            )
        )
        rows.append(
            Row(
                "soak: server RSS, first -> last quarter (max)",
                f"{mb(first)} -> {mb(last)}",
                "-",
                "-",
                f"{(growth - 1) * 100:+.1f}%",
                "flat (<= +10%)",
                growth <= 1.10,
                f"RSS every second: start {mb(samples[0][1])}, end {mb(samples[-1][1])}, "
                f"max {mb(max(v for _, v in samples))}",
                {"first": first, "last": last, "samples": len(samples)},
            )
        )
        same = found["log_rows"] == found["answered_rows"]
        rows.append(
            Row(
                "soak: rows in the prediction log = rows answered",
                f"{found['log_rows']:,} / {found['answered_rows']:,}",
                "-",
                "-",
                "-",
                "equal",
                same,
                f"read_log after SIGTERM (exit code {found['exit_code']}, "
                f"{found['stop_seconds']:.1f} s to exit); "
                f"/metrics right before SIGTERM: {written(found)}",
                {"log_rows": found["log_rows"], "answered_rows": found["answered_rows"]},
            )
        )
    return rows


def table(rows: list[Row]) -> str:
    return harness.table(
        ["benchmark", "molen", "MLflow", "floor", "ratio", "target", "pass"],
        [
            [r.benchmark, r.molen, r.mlflow, r.floor, r.ratio, r.target, harness.verdict(r.passed)]
            for r in rows
        ],
    )


def stack_versions(python: Path) -> dict[str, str | None]:
    code = (
        "import json, importlib.metadata as m\n"
        "def v(n):\n"
        "    try:\n        return m.version(n)\n"
        "    except m.PackageNotFoundError:\n        return None\n"
        f"print(json.dumps({{n: v(n) for n in {list(STACK)!r}}}))"
    )
    found: dict[str, str | None] = run_json([str(python), "-c", code])
    return found


def header(facts: dict[str, Any], date: str, quick: bool) -> str:
    libs = facts["libraries"]

    def stack(versions: dict[str, str | None]) -> str:
        return ", ".join(f"{name} {versions[name]}" for name in STACK if versions.get(name))

    return "\n".join(
        [
            *harness.heading("serving", date, quick, facts),
            f"python {facts['python']}, molen {facts['molen']}, MLflow {facts['mlflow']}, "
            f"scikit-learn {libs['scikit-learn']}, pandas {libs['pandas']}, NumPy {libs['numpy']} "
            "(same in both venvs)",
            f"molen/floor venv: {stack(facts['stack_molen'])}",
            f"MLflow venv: {stack(facts['stack_mlflow'])}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark molen serve against MLflow and a bare FastAPI floor."
    )
    harness.standard_options(
        parser,
        results=RESULTS,
        quick="shorter load runs (< 2.5 min)",
        keep="keep the project, packages and server logs",
        only=BENCHMARKS,
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    only = set(args.only or BENCHMARKS)
    started = time.perf_counter()
    date = harness.now()

    mlflow_python = ensure_mlflow_venv()
    facts = machine_facts(mlflow_python)
    facts["libraries"] = {name: metadata.version(name) for name in LIBRARIES}
    facts["stack_molen"] = stack_versions(MOLEN_PYTHON)
    facts["stack_mlflow"] = stack_versions(mlflow_python)
    print(header(facts, date, args.quick), flush=True)

    raw: dict[str, Any] = {}
    with harness.work_folder("serving", args.keep, log) as work:
        setup = prepare(work, mlflow_python)
        raw["setup"] = setup.info
        load_before = harness.loadavg()
        run_all(plan, setup, Servers(setup, mlflow_python), only, raw)
        raw["loadavg_before_after"] = [load_before, harness.loadavg()]
    runtime = time.perf_counter() - started
    rows = build_rows(plan, raw)

    harness.report(table(rows), rows, runtime)
    harness.write_results(
        args.output, harness.document(date, args.quick, facts, plan, runtime, rows, raw), log
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

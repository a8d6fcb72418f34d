"""Tracking-server benchmark: ``molen server`` against ``mlflow server``, both on PostgreSQL.

Usage::

    .venv/bin/python benchmarks/bench_server.py [--quick] [--only NAME ...] [--output PATH] [--keep]

One private PostgreSQL cluster for the whole run (Debian's binaries, found as
``tests/conftest.py`` finds them; ``initdb`` in the work folder, ``pg_ctl`` on a free port of
127.0.0.1, run as the ``postgres`` user when we are root; ``fsync``, ``synchronous_commit`` and
``full_page_writes`` off as in the tests, which favours MLflow's one commit per value), a fresh
database for every server. The servers, each started on a free port and stopped with SIGTERM to
its process group:

* molen: ``molen server --store postgresql+psycopg://… --artifacts DIR --port P`` (its
  default, one worker);
* MLflow 3.17 (the venv of ``benchmarks/peers.py``, with psycopg 3, which SQLAlchemy 2.1 uses
  for ``postgresql://``, as molen does): ``mlflow server
  --backend-store-uri postgresql://… --artifacts-destination DIR --host 127.0.0.1 --port P``
  (its default, uvicorn with 4 workers).

Benchmarks (``--only``) and the issue's targets:

1. ``startup``: time from ``Popen`` to the first 200 from ``/health`` (polled every 10 ms), and
   to the first answer of the API (molen ``store/list_experiments``, MLflow
   ``experiments/search``: the store opened), median of 5 starts on a database that already
   has its schema (one untimed first start on the empty database before, reported in a note);
   molen and MLflow alternate. molen's ``/health`` < 2 s.
2. ``load``: 32 clients for 60 s (15 s with ``--quick``), each a thread of one load process
   (one per tool and mode, so the clients' CPU is at most one core of the two) with its own
   run, logging ``log_metric("loss", float(step), step)`` for step 0, 1, ... one call at a time,
   each call as soon as the last returned (the driver is ``drive`` of
   ``benchmarks/mlflow_server_peer.py``, the same code for both tools):

   * molen's client: ``MOLEN_TRACKING_URI=http://…``, ``molen.start_run()`` and
     ``run.log_metric`` (molen buffers the values and one background thread per process sends
     them in batches, so a call costs microseconds; a call that fills a run's buffer to
     200,000 values sends it itself; the run's ``end()`` sends what is left). molen's active
     run is per process, not per thread, so a run started while another thread's run is
     active would become its child; the 32 runs start at once here and none does;
   * molen's client again, each client paced at 250 values/s (8,000/s offered), as a training
     loop that computes between its steps;
   * molen's REST ``log_batch`` with one value per request (``HttpMetadataStore.log_batch``,
     molen's own HTTP client: the unbatched, like-for-like comparison with MLflow's client);
   * MLflow's client: ``mlflow.start_run()`` and ``mlflow.log_metric`` in the peer venv (one
     REST call per value, MLflow's default; its active run is per thread).

   Throughput is the values written (the metric rows in PostgreSQL, per run at most what its
   client logged) over the time from the common start until the last client's run ended, so
   buffered values count once they are stored; p50, p99 and the longest call; failed calls
   and run ends; the server's 500s; the rows must equal what each client logged. Target:
   molen's client (the first mode) >= 5x MLflow's client, with every value written.
3. ``fault``: 32 molen clients paced as above, then 32 REST clients of one value per request,
   each for 40 s (20 s); PostgreSQL is stopped (``pg_ctl stop -m fast``) 10 s (5 s) after the
   start and started again 5 s later. A probe (molen's ``list_experiments``, every 100 ms, no
   retries) records what the server answers: 503 with ``Retry-After`` while the database is
   down, never a 500, the server process alive, 200 again by itself once PostgreSQL is back;
   the clients retry (molen's HTTP client for 30 s) and the rows equal what they logged.

The table goes to stdout, progress to stderr, every sample to ``benchmarks/results/server.json``.
Databases, artifacts and server output live under ``.bench/tmp/`` (removed unless ``--keep``).

``bench_server.py load --url URL --clients N --seconds S --mode client|rest [--rate R]`` is
molen's load process (run by the benchmark under molen's python; one JSON line when the clock starts, one
with the result).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from bench_serving import free_port, mlflow_env, tail  # noqa: E402
from bench_tracking import MOLEN_PYTHON, machine_facts, median, molen_env  # noqa: E402
from harness import log as _log  # noqa: E402
from mlflow_server_peer import KEY, drive, protocol_stream  # noqa: E402
from peers import ensure_mlflow_venv  # noqa: E402

PEER = HERE / "mlflow_server_peer.py"
RESULTS = HERE / "results" / "server.json"
BENCHMARKS = ("startup", "load", "fault")
EXPERIMENT = "bench"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 40.0
LOAD_TIMEOUT = 1800.0
MOLEN_PROBE = ("POST", "/api/molen/v1/store/list_experiments", b"{}")
MLFLOW_PROBE = ("POST", "/api/2.0/mlflow/experiments/search", b'{"max_results": 1}')


@dataclass(frozen=True)
class Plan:
    """How much of each benchmark to run (full or --quick)."""

    start_repeat: int = 5
    clients: int = 32
    load_seconds: float = 60.0
    fault_seconds: float = 40.0
    fault_after: float = 10.0  # PostgreSQL is stopped this long after the load started
    outage_seconds: float = 5.0  # and started again this long after it stopped
    fault_rate: float = 250.0  # values/s of each molen client in the fault test (a sustainable load)
    probe_interval: float = 0.1


FULL = Plan()
QUICK = Plan(load_seconds=15.0, fault_seconds=20.0, fault_after=5.0)


def log(message: str) -> None:
    _log(f"server: {message}")


# -- PostgreSQL ---------------------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """Debian's newest ``/usr/lib/postgresql/<version>/bin``, else ``initdb`` on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) for x in p.parent.parent.name.split(".") if x.isdigit()],
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("no PostgreSQL server binaries: run `scripts/bootstrap.sh --postgres`")
    return Path(initdb).resolve().parent


class Postgres:
    """A throw-away cluster in ``root`` on a free port (trust auth, superuser ``postgres``)."""

    def __init__(self, root: Path) -> None:
        self.root, self.bindir, self.port = root, postgres_bindir(), free_port()
        self.user = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}{tail(self.root / 'postgres.log')}")

    def init(self) -> None:
        (self.root / "sock").mkdir(parents=True)
        if self.user:
            for path in (self.root, self.root / "sock"):
                shutil.chown(path, user=self.user)
        self._run(
            "initdb", "-D", "data", "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1 -c fsync=off "
        options += "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        self._run("pg_ctl", "-D", "data", "-l", "postgres.log", "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", "data", "-m", "fast", "-w", "-t", "60", "stop")

    def url(self, database: str, driver: str = "psycopg") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def query(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"
        with psycopg.connect(dsn, autocommit=True) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def create(self, database: str) -> str:
        self.query(f'CREATE DATABASE "{database}"')
        return database


@contextlib.contextmanager
def postgres(work: Path) -> Iterator[Postgres]:
    cluster = Postgres(work / "pg")
    cluster.init()
    cluster.start()
    log(f"PostgreSQL ({cluster.bindir.parent.name}) on port {cluster.port}")
    try:
        yield cluster
    finally:
        with contextlib.suppress(RuntimeError):
            cluster.stop()


# -- the servers --------------------------------------------------------------------------------------


def request(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


@dataclass
class Server:
    """A running server process and when it first answered."""

    label: str
    process: subprocess.Popen[bytes]
    port: int
    output: Path
    probe: tuple[str, str, bytes]
    health_seconds: float = 0.0
    api_seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


def wait_for(server: Server, started: float, method: str, path: str, body: bytes | None) -> float:
    """Seconds from ``started`` to the first 200 of ``method path``, polled every 10 ms."""
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.label} exited ({server.process.returncode}): {tail(server.output)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if request(server.port, method, path, body, timeout=5)[0] == 200:
                return time.perf_counter() - started
        if time.perf_counter() - started > START_TIMEOUT:
            raise RuntimeError(
                f"{server.label}: no 200 from {path} in {START_TIMEOUT:.0f} s: {tail(server.output)}"
            )
        time.sleep(0.01)


@contextlib.contextmanager
def serving(
    label: str, cmd: list[str], env: dict[str, str], port: int, probe: tuple[str, str, bytes], output: Path
) -> Iterator[Server]:
    """Start ``cmd`` in its own process group, time ``/health`` and the API, yield, SIGTERM."""
    with output.open("wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(
            cmd, cwd=output.parent, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(label, process, port, output, probe)
    try:
        server.health_seconds = wait_for(server, started, "GET", "/health", None)
        server.api_seconds = wait_for(server, started, *probe)
        yield server
    finally:
        stop(server)


def stop(server: Server) -> None:
    """SIGTERM the process group, wait (SIGKILL after ``STOP_TIMEOUT``), record the exit code."""
    process = server.process
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
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:  # uvicorn's workers are in the same group
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    server.stats["exit_code"] = process.returncode


class Servers:
    """Starting molen and MLflow servers on databases of one cluster."""

    def __init__(self, work: Path, cluster: Postgres, mlflow_python: Path) -> None:
        self.work, self.cluster, self.mlflow_python = work, cluster, mlflow_python
        self.count = 0

    def _folder(self, label: str) -> Path:
        self.count += 1
        folder = self.work / f"{self.count:02d}-{label}"
        folder.mkdir()
        return folder

    def molen(self, database: str) -> contextlib.AbstractContextManager[Server]:
        folder, port = self._folder(f"molen-{database}"), free_port()
        cmd = [str(MOLEN_PYTHON.parent / "molen"), "server", "--store", self.cluster.url(database)]
        cmd += ["--artifacts", str(folder / "objects"), "--port", str(port)]
        return serving("molen", cmd, molen_env(), port, MOLEN_PROBE, folder / "server.log")

    def mlflow(self, database: str) -> contextlib.AbstractContextManager[Server]:
        folder, port = self._folder(f"mlflow-{database}"), free_port()
        cmd = [str(self.mlflow_python.parent / "mlflow"), "server", "--backend-store-uri"]
        cmd += [self.cluster.url(database, ""), "--artifacts-destination", str(folder / "mlartifacts")]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        return serving(
            "MLflow", cmd, mlflow_env(self.mlflow_python), port, MLFLOW_PROBE, folder / "server.log"
        )


def server_errors(server: Server) -> dict[str, Any]:
    """What the server's output says went wrong: its 500s (molen logs "unexpected error" for each,
    MLflow's access log the status) and the exceptions that ended its tracebacks, counted."""
    text = server.output.read_text(errors="replace")
    exceptions: dict[str, int] = {}
    for line in text.splitlines():
        if re.match(r"[A-Za-z_][\w.]*(Error|Exception)(: |$)", line):
            exceptions[line[:300]] = exceptions.get(line[:300], 0) + 1
    errors = text.count("molen server: unexpected error") + len(re.findall(r'HTTP/1\.1" 50[0-2] ', text))
    return {"unexpected_errors": errors, "exceptions": exceptions}


# -- the load process and the row counts -------------------------------------------------------------


def run_load(
    cmd: list[str], env: dict[str, str], cwd: Path, on_start: Callable[[float], None] | None = None
) -> dict[str, Any]:
    """Run a load process: its first line says when the clock started (``on_start`` is called
    then, in this thread), its last line is the result."""
    errors = cwd / "load.stderr"
    with errors.open("wb") as sink:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=sink, text=True)
    if process.stdout is None:  # for the type checker: stdout is a pipe
        raise RuntimeError("no pipe to the load process")
    lines = []
    try:
        for line in process.stdout:
            event = json.loads(line)
            lines.append(event)
            if event.get("event") == "started" and on_start is not None:
                on_start(event["time"])
        process.wait(LOAD_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0 or not lines or "logged" not in lines[-1]:
        raise RuntimeError(f"load process failed ({process.returncode}): {tail(errors, 4000)}")
    found: dict[str, Any] = lines[-1]
    found["stderr_tail"] = tail(errors, 1500)
    return found


def molen_load(
    work: Path,
    server: Server,
    plan: Plan,
    seconds: float,
    mode: str,
    on_start: Callable[[float], None] | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    folder = work / f"load-{mode}-{server.port}"
    folder.mkdir()
    env = {**molen_env(), "MOLEN_TRACKING_URI": f"http://127.0.0.1:{server.port}"}
    cmd = [str(MOLEN_PYTHON), str(Path(__file__).resolve()), "load", "--url", env["MOLEN_TRACKING_URI"]]
    cmd += ["--clients", str(plan.clients), "--seconds", str(seconds), "--mode", mode]
    cmd += ["--rate", str(rate)] if rate else []
    paced = f", {rate:.0f} values/s each" if rate else ", as fast as the calls return"
    log(f"molen {mode}: {plan.clients} clients for {seconds:.0f} s{paced}")
    return run_load(cmd, env, folder, on_start)


def mlflow_load(work: Path, server: Server, plan: Plan, python: Path) -> dict[str, Any]:
    folder = work / f"load-mlflow-{server.port}"
    folder.mkdir()
    cmd = [str(python), str(PEER), "load", "--url", f"http://127.0.0.1:{server.port}"]
    cmd += ["--clients", str(plan.clients), "--seconds", str(plan.load_seconds), "--mode", "sync"]
    log(f"MLflow: {plan.clients} clients for {plan.load_seconds:.0f} s")
    return run_load(cmd, mlflow_env(python), folder)


def count_rows(
    cluster: Postgres, database: str, found: dict[str, Any], mlflow: bool = False
) -> dict[str, Any]:
    """The metric rows of each client's run against what it logged; duplicates (same run, key, step)."""
    run = "run_uuid" if mlflow else "run_id"
    rows = cluster.query(
        f"SELECT {run}, count(*), count(DISTINCT (key, step)) FROM metrics GROUP BY {run}", database
    )
    stored = {run_id: (n, distinct) for run_id, n, distinct in rows}
    runs = found["runs"]
    mismatched = {
        run_id: {"logged": r["logged"], "rows": stored.get(run_id, (0, 0))[0]}
        for run_id, r in runs.items()
        if stored.get(run_id, (0, 0))[0] != r["logged"]
    }
    counted = {
        "rows": sum(n for n, _ in stored.values()),
        "written": sum(min(r["logged"], stored.get(run_id, (0, 0))[0]) for run_id, r in runs.items()),
        "duplicates": sum(n - distinct for n, distinct in stored.values()),
        "runs_with_rows": len(stored),
        "mismatched_runs": mismatched,
    }
    counted["equal"] = counted["rows"] == found["logged"] and not mismatched
    found["written_per_second"] = counted["written"] / found["wall_seconds"]
    log(
        f"{database}: {counted['rows']:,} metric rows for {found['logged']:,} values logged; "
        f"{len(mismatched)} runs differ, {counted['duplicates']} duplicates"
    )
    return counted


# -- the benchmarks -----------------------------------------------------------------------------------


def bench_startup(plan: Plan, servers: Servers, raw: dict[str, Any]) -> list[Row]:
    found: dict[str, Any] = {"molen": [], "mlflow": [], "first": {}}
    databases = {
        "molen": servers.cluster.create("molen_startup"),
        "mlflow": servers.cluster.create("mlflow_startup"),
    }
    starts = {"molen": servers.molen, "mlflow": servers.mlflow}
    for i in range(plan.start_repeat + 1):
        order = ("molen", "mlflow") if i % 2 == 0 else ("mlflow", "molen")
        for tool in order:
            with starts[tool](databases[tool]) as server:
                sample = {"health": server.health_seconds, "api": server.api_seconds}
            if i == 0:
                found["first"][tool] = sample
            else:
                found[tool].append(sample)
            log(f"{server.label} start {i}: /health {sample['health']:.2f} s, API {sample['api']:.2f} s")
    raw["startup"] = found
    health = {tool: median([s["health"] for s in found[tool]]) for tool in ("molen", "mlflow")}
    api = {tool: median([s["api"] for s in found[tool]]) for tool in ("molen", "mlflow")}
    first = found["first"]
    return [
        Row(
            f"/health 200 after process start, median of {plan.start_repeat}",
            secs(health["molen"]),
            secs(health["mlflow"]),
            f"{health['mlflow'] / health['molen']:.1f}x",
            "< 2 s",
            health["molen"] < 2.0,
            f"first start on the empty database: molen {secs(first['molen']['health'])}, "
            f"MLflow {secs(first['mlflow']['health'])} (MLflow creates its schema before it listens)",
            health,
        ),
        Row(
            "first API answer after process start (store opened)",
            secs(api["molen"]),
            secs(api["mlflow"]),
            f"{api['mlflow'] / api['molen']:.1f}x",
            "-",
            None,
            f"molen store/list_experiments, MLflow experiments/search; first start: molen "
            f"{secs(first['molen']['api'])} (creates its schema), MLflow {secs(first['mlflow']['api'])}",
            api,
        ),
    ]


def bench_load(plan: Plan, servers: Servers, raw: dict[str, Any]) -> list[Row]:
    cluster, work = servers.cluster, servers.work
    found: dict[str, Any] = {}
    for name, mode, pace in (
        ("client", "client", None),
        ("rest", "rest", None),
        ("paced", "client", plan.fault_rate),
    ):
        database = cluster.create(f"molen_load_{name}")
        with servers.molen(database) as server:
            result = molen_load(work, server, plan, plan.load_seconds, mode, rate=pace)
        result.update(
            counted=count_rows(cluster, database, result), server=server.stats, problems=server_errors(server)
        )
        found[f"molen_{name}"] = result
    database = cluster.create("mlflow_load")
    with servers.mlflow(database) as server:
        result = mlflow_load(work, server, plan, servers.mlflow_python)
    result.update(
        counted=count_rows(cluster, database, result, mlflow=True),
        server=server.stats,
        problems=server_errors(server),
    )
    found["mlflow"] = result
    for name, result in found.items():
        log(
            f"{name}: {result['written_per_second']:,.0f} values/s written ({result['logged']:,} logged, "
            f"{result['counted']['rows']:,} rows) in {result['wall_seconds']:.0f} s, "
            f"p50 {ms(result['p50'])}, "
            f"p99 {ms(result['p99'])}, max {secs(result['max'])}, {result['errors']} errors, "
            f"{len(result['finish_errors'])} failed run ends, "
            f"server: {result['problems']['unexpected_errors']} "
            f"unexpected errors; load process {result['client_cpu_share'] * 100:.0f}% of a core"
        )
    raw["load"] = found
    client, rest, paced, theirs = (found[k] for k in ("molen_client", "molen_rest", "molen_paced", "mlflow"))
    label = f"{plan.clients} clients x {plan.load_seconds:.0f} s"
    ratio = client["written_per_second"] / theirs["written_per_second"]
    sound = {name: clean(result) for name, result in found.items()}
    return [
        Row(
            f"{label}, each tool's client: values/s written",
            rate(client["written_per_second"]),
            rate(theirs["written_per_second"]),
            f"{ratio:.1f}x",
            ">= 5x MLflow, all written",
            ratio >= 5 and sound["molen_client"],
            f"molen run.log_metric (buffered; a background thread sends batches, a call that fills the "
            f"buffer to {200_000:,} sends it itself) vs mlflow.log_metric (one request per value); "
            f"{client['logged']:,} values logged by molen's clients ({rate(client['calls_per_second'])} "
            f"calls), written in {secs(client['wall_seconds'])} (runs' end() up to "
            f"{secs(client['finish_seconds_max'])}); MLflow --workers 4 (its default), "
            "molen 1 worker (its default)",
            {"molen": client["written_per_second"], "mlflow": theirs["written_per_second"]},
        ),
        Row(
            "  per call p50 / p99 (max)",
            f"{ms(client['p50'])} / {ms(client['p99'])} ({secs(client['max'])})",
            f"{ms(theirs['p50'])} / {ms(theirs['p99'])} ({secs(theirs['max'])})",
            "-",
            "-",
            None,
            values={"molen": [client["p50"], client["p99"]], "mlflow": [theirs["p50"], theirs["p99"]]},
        ),
        Row(
            f"{label}, molen's client at {plan.fault_rate:.0f} values/s each: values/s",
            rate(paced["written_per_second"]),
            "-",
            "-",
            "-",
            None,
            f"the same clients as a training loop that computes between steps "
            f"({plan.clients * plan.fault_rate:,.0f} values/s offered): p50 {ms(paced['p50'])}, p99 "
            f"{ms(paced['p99'])}, max {secs(paced['max'])}; runs' end() up to "
            f"{secs(paced['finish_seconds_max'])}; rows {counts(paced)}; failed calls + run ends "
            f"{failures(paced)}; server 500s {paced['problems']['unexpected_errors']}",
            {"molen": paced["written_per_second"], "clean": clean(paced)},
        ),
        Row(
            f"{label}, one value per request: values/s",
            rate(rest["written_per_second"]),
            rate(theirs["written_per_second"]),
            f"{rest['written_per_second'] / theirs['written_per_second']:.1f}x",
            "-",
            None,
            "molen REST log_batch of one metric per request (HttpMetadataStore, molen's HTTP client) "
            "vs mlflow.log_metric",
            {"molen": rest["written_per_second"], "mlflow": theirs["written_per_second"]},
        ),
        Row(
            "  per request p50 / p99 (max)",
            f"{ms(rest['p50'])} / {ms(rest['p99'])} ({secs(rest['max'])})",
            f"{ms(theirs['p50'])} / {ms(theirs['p99'])} ({secs(theirs['max'])})",
            "-",
            "-",
            None,
            values={"molen": [rest["p50"], rest["p99"]], "mlflow": [theirs["p50"], theirs["p99"]]},
        ),
        Row(
            "  failed calls + failed run ends (client, one per request)",
            f"{failures(client)}, {failures(rest)}",
            failures(theirs),
            "-",
            "0",
            sound["molen_client"] and sound["molen_rest"],
            "; ".join(
                dict.fromkeys(
                    client["error_samples"][:2] + client["finish_errors"] + rest["error_samples"][:2]
                )
            ),
        ),
        Row(
            "  metric rows in PostgreSQL / values logged",
            f"{counts(client)}, {counts(rest)}",
            counts(theirs),
            "-",
            "equal",
            client["counted"]["equal"] and rest["counted"]["equal"],
            f"runs whose rows differ: {len(client['counted']['mismatched_runs'])} / "
            f"{len(rest['counted']['mismatched_runs'])} "
            f"(MLflow {len(theirs['counted']['mismatched_runs'])}); duplicate rows (same run, key, step): "
            f"{client['counted']['duplicates']} / {rest['counted']['duplicates']}",
        ),
        Row(
            "  server: 500s (unexpected errors in its log)",
            f"{client['problems']['unexpected_errors']}, {rest['problems']['unexpected_errors']}",
            f"{theirs['problems']['unexpected_errors']}",
            "-",
            "0",
            not client["problems"]["unexpected_errors"] and not rest["problems"]["unexpected_errors"],
            "molen's client / one per request; " + "; ".join(client["problems"]["exceptions"]),
        ),
    ]


def clean(result: dict[str, Any]) -> bool:
    """No failed call, no failed run end, every value in the database once."""
    return not result["errors"] and not result["finish_errors"] and bool(result["counted"]["equal"])


def failures(result: dict[str, Any]) -> str:
    return f"{result['errors']} + {len(result['finish_errors'])}"


class Probe:
    """Asks the server ``probe`` every ``interval`` seconds (no retries) and records the answers."""

    def __init__(self, server: Server, interval: float) -> None:
        self.server, self.interval = server, interval
        self.answers: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="probe", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            sent = time.time()
            try:
                status, headers, body = request(self.server.port, *self.server.probe)
                answer = {"time": sent, "status": status, "retry_after": headers.get("retry-after")}
                if status != 200:
                    answer["body"] = body[:300].decode(errors="replace")
            except (OSError, http.client.HTTPException) as exc:
                answer = {"time": sent, "status": None, "error": f"{type(exc).__name__}: {exc}"}
            answer["seconds"] = time.time() - sent
            self.answers.append(answer)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_fault(plan: Plan, servers: Servers, raw: dict[str, Any]) -> list[Row]:
    cluster, work = servers.cluster, servers.work
    found: dict[str, Any] = {}
    for mode, pace in (("client", plan.fault_rate), ("rest", None)):
        database = cluster.create(f"molen_fault_{mode}")
        events: dict[str, float] = {}
        with servers.molen(database) as server, Probe(server, plan.probe_interval) as probe:
            restart = outage(cluster, plan, events)
            result = molen_load(work, server, plan, plan.fault_seconds, mode, restart, pace)
            time.sleep(2 * plan.probe_interval)
            result["alive_after"] = server.process.poll() is None
        result.update(
            counted=count_rows(cluster, database, result),
            events=events,
            probes=probe.answers,
            server=server.stats,
            problems=server_errors(server),
            probe_summary=summarize(probe.answers, events),
        )
        log(f"fault {mode}: {json.dumps(result['probe_summary'])}")
        found[mode] = result
    raw["fault"] = found
    client, rest = found["client"], found["rest"]
    summaries = [client["probe_summary"], rest["probe_summary"]]
    answered = all(
        s["down_503_with_retry_after"] == s["down_answers"] > 0 and not s["errors_5xx"] for s in summaries
    )
    alive = client["alive_after"] and rest["alive_after"]
    return [
        Row(
            f"PostgreSQL stopped {plan.outage_seconds:.0f} s mid-load: server answers",
            " / ".join(
                f"{s['down_503_with_retry_after']}/{s['down_answers']} 503+Retry-After" for s in summaries
            ),
            "-",
            "-",
            "503 + Retry-After, up",
            answered and alive,
            f"database unreachable {secs(summaries[0]['outage_seconds'])} / "
            f"{secs(summaries[1]['outage_seconds'])} (pg_ctl stop begun -> ready again); "
            f"other 5xx during the run: {summaries[0]['errors_5xx'] or 'none'} / "
            f"{summaries[1]['errors_5xx'] or 'none'}; server process alive after: {client['alive_after']} / "
            f"{rest['alive_after']}; load: molen's client at {plan.fault_rate:.0f} values/s per client / "
            "one value per request as fast as it goes",
            {"summaries": summaries},
        ),
        Row(
            "  first 200 after PostgreSQL is back",
            " / ".join(secs(s["recovered_seconds"]) for s in summaries),
            "-",
            "-",
            "by itself",
            all(s["recovered_seconds"] is not None for s in summaries),
            "probe (list_experiments without retries) every 100 ms",
        ),
        Row(
            "  metric rows in PostgreSQL / values logged through the restart",
            f"{counts(client)}, {counts(rest)}",
            "-",
            "-",
            "equal",
            clean(client) and clean(rest),
            f"failed calls + run ends {failures(client)} / {failures(rest)}; duplicate rows "
            f"{client['counted']['duplicates']} / {rest['counted']['duplicates']}; longest call "
            f"{secs(client['max'])} / {secs(rest['max'])}; "
            f"server 500s {client['problems']['unexpected_errors']} / "
            f"{rest['problems']['unexpected_errors']}",
        ),
    ]


def outage(cluster: Postgres, plan: Plan, events: dict[str, float]) -> Callable[[float], None]:
    """What to do when the load has started: wait ``fault_after``, stop PostgreSQL, wait
    ``outage_seconds``, start it again; the moments go to ``events``."""

    def restart(started: float) -> None:
        time.sleep(max(0.0, started + plan.fault_after - time.time()))
        events["stop_begin"] = time.time()
        cluster.stop()
        events["stopped"] = time.time()
        log(f"PostgreSQL stopped ({events['stopped'] - events['stop_begin']:.1f} s to stop)")
        time.sleep(plan.outage_seconds)
        events["start_begin"] = time.time()
        cluster.start()
        events["started"] = time.time()
        log(f"PostgreSQL up again ({events['started'] - events['start_begin']:.1f} s to start)")

    return restart


def summarize(answers: list[dict[str, Any]], events: dict[str, float]) -> dict[str, Any]:
    """What the probe saw while the database was down, and when it answered 200 again."""
    down = [a for a in answers if events["stopped"] <= a["time"] <= events["start_begin"]]
    errors: dict[str, int] = {}
    for a in answers:
        if a["status"] is None or (a["status"] >= 500 and not (a["status"] == 503 and a.get("retry_after"))):
            key = str(a["status"] or a.get("error"))
            errors[key] = errors.get(key, 0) + 1
    after = [a for a in answers if a["time"] >= events["started"] and a["status"] == 200]
    non_ok = [a["time"] for a in answers if a["status"] != 200]
    return {
        "outage_seconds": events["started"] - events["stop_begin"],
        "down_answers": len(down),
        "down_503_with_retry_after": sum(a["status"] == 503 and bool(a.get("retry_after")) for a in down),
        "errors_5xx": errors,
        "retry_after": sorted({a["retry_after"] for a in answers if a.get("retry_after")}),
        "recovered_seconds": after[0]["time"] - events["started"] if after else None,
        "non_200_span": [min(non_ok) - events["stop_begin"], max(non_ok) - events["stop_begin"]]
        if non_ok
        else None,
        "slowest_probe_seconds": max((a["seconds"] for a in answers), default=None),
    }


# -- molen's load process -----------------------------------------------------------------------------


class MolenRun:
    """One client as a user writes it: ``molen.start_run()`` and ``run.log_metric`` (buffered)."""

    def __init__(self, index: int) -> None:
        import molen

        self.run = molen.start_run(experiment=EXPERIMENT, name=f"client-{index}")
        self.run_id = self.run.id

    def log(self, step: int) -> None:
        self.run.log_metric(KEY, float(step), step)

    def finish(self) -> None:
        self.run.end()


class MolenRequests:
    """One client of the REST API: ``log_batch`` with one metric per request."""

    def __init__(self, store: Any, experiment_id: int, index: int) -> None:
        from molen.entities import Metric

        self.store, self.metric = store, Metric
        self.run_id = uuid.uuid4().hex
        store.create_run(
            run_id=self.run_id, experiment_id=experiment_id, name=f"client-{index}", start_time=now_ms()
        )

    def log(self, step: int) -> None:
        self.store.log_batch(self.run_id, metrics=[self.metric(KEY, float(step), step, now_ms())])

    def finish(self) -> None:
        self.store.end_run(self.run_id, "FINISHED", now_ms())


def now_ms() -> int:
    return int(time.time() * 1000)


def load_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_server.py load", description="molen's load process")
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--mode", choices=("client", "rest"), default="client")
    parser.add_argument("--rate", type=float, help="values/s of each client (default: as fast as it goes)")
    args = parser.parse_args(argv)
    out = protocol_stream()

    def announce(event: dict[str, Any]) -> None:
        out.write(json.dumps(event) + "\n")

    open_client: Callable[[int], Any]
    if args.mode == "client":
        open_client = MolenRun
    else:
        from molen.stores.metadata.http import HttpMetadataStore

        store = HttpMetadataStore(args.url)
        experiment = store.get_or_create_experiment(EXPERIMENT).id
        open_client = lambda i: MolenRequests(store, experiment, i)  # noqa: E731
    found = drive(open_client, args.clients, args.seconds, announce, args.rate)
    found["mode"] = args.mode
    announce(found)
    return 0


# -- the table ----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table (cells already formatted; numbers in ``values``)."""

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
        return "never"
    return f"{value * 1000:,.0f} ms" if value < 1 else f"{value:,.2f} s"


def ms(value: float) -> str:
    if value < 0.001:
        return f"{value * 1e6:,.1f} us"
    return f"{value * 1000:,.2f} ms" if value < 0.1 else f"{value * 1000:,.0f} ms"


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def counts(found: dict[str, Any]) -> str:
    return f"{found['counted']['rows']:,}/{found['logged']:,}"


def table(rows: list[Row]) -> str:
    return harness.table(
        ["benchmark", "molen", "MLflow", "ratio", "target", "pass"],
        [[r.benchmark, r.molen, r.mlflow, r.ratio, r.target, harness.verdict(r.passed)] for r in rows],
    )


def header(facts: dict[str, Any], date: str, quick: bool) -> str:
    return "\n".join(
        [
            *harness.heading("tracking-server", date, quick, facts),
            f"python {facts['python']}, molen {facts['molen']}, MLflow {facts['mlflow']}, "
            f"PostgreSQL {facts['postgresql']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        return load_main(argv[1:])
    parser = argparse.ArgumentParser(
        description="Benchmark molen server against mlflow server on PostgreSQL."
    )
    harness.standard_options(
        parser,
        results=RESULTS,
        quick="15 s of load, 20 s around the outage (< 3 min)",
        keep="keep the databases, artifacts and server logs",
        only=BENCHMARKS,
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    date = harness.now()

    mlflow_python = ensure_mlflow_venv()
    facts = machine_facts(mlflow_python)
    facts["postgresql"] = postgres_bindir().parent.name
    print(header(facts, date, args.quick), flush=True)

    raw: dict[str, Any] = {}
    benches = {"startup": bench_startup, "load": bench_load, "fault": bench_fault}
    with harness.work_folder("server", args.keep, log) as work, postgres(work) as cluster:
        facts["postgresql"] = cluster.query("SHOW server_version")[0][0]
        rows = harness.run_selected(
            benches, args.only, (plan, Servers(work, cluster, mlflow_python)), raw, log
        )
    runtime = time.perf_counter() - started

    harness.report(table(rows), rows, runtime)
    harness.write_results(
        args.output, harness.document(date, args.quick, facts, plan, runtime, rows, raw), log
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

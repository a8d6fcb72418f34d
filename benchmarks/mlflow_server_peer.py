"""MLflow side ("peer") of the tracking-server benchmark, and the load driver both sides share.

Run this file with the python of the MLflow peer venv (see ``benchmarks/peers.py``): it imports
only MLflow and the standard library. ``bench_server.py`` imports ``drive`` and
``protocol_stream`` from it for molen's load process, so both tools are loaded and timed by the
same code.

``load --url URL --clients N --seconds S [--mode sync|async]``
    N threads, each with its own run (``mlflow.start_run()`` in that thread; MLflow's active run
    is per thread), experiment ``bench``, all started before the clock starts. Then each thread
    calls ``mlflow.log_metric("loss", float(step), step=step)`` for step 0, 1, 2, ... one call
    at a time until S seconds have passed, then ``mlflow.end_run()``. ``sync`` is MLflow's
    default (one REST call per value); ``async`` passes ``synchronous=False`` (MLflow's own
    background batching, ``MLFLOW_ENABLE_ASYNC_LOGGING``), flushed by ``end_run``.

Output (stdout; MLflow's own output goes to stderr): one line ``{"event": "started", ...}`` when
the clock starts, then one JSON object with the result of ``drive``.

MLflow's telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY``, ``DO_NOT_TRACK``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import traceback
from array import array
from collections.abc import Callable
from typing import Any, Protocol, TextIO

TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
EXPERIMENT = "bench"
KEY = "loss"
#: Latencies kept for the percentiles: every k-th call of each client, so at most about this many.
SAMPLE = 1_000_000


class Client(Protocol):
    """One client of the load: its own run, logging one value per call."""

    run_id: str

    def log(self, step: int) -> None: ...

    def finish(self) -> None: ...


def protocol_stream() -> TextIO:
    """The real stdout, for the JSON lines; everything else printed goes to stderr from now on."""
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def drive(
    open_client: Callable[[int], Client],
    clients: int,
    seconds: float,
    announce: Callable[[dict[str, Any]], None],
    rate: float | None = None,
) -> dict[str, Any]:
    """Run ``clients`` threads, each ``open_client(i)`` (setup, untimed), then ``log(step)`` one
    call at a time for ``seconds`` from a common start (as fast as it returns, or ``rate`` calls
    per second per client, as a training loop that computes between steps), then ``finish()``.

    Throughput is the values logged without an error over the time from the start until the last
    ``finish()`` returned (so a client that buffers is timed until its values are written).
    """
    started: dict[str, float] = {}

    def start_clock() -> None:
        started.update(clock=time.perf_counter(), wall=time.time(), cpu=cpu_seconds())
        announce({"event": "started", "time": started["wall"]})

    barrier = threading.Barrier(clients, action=start_clock)
    results: list[dict[str, Any]] = [{} for _ in range(clients)]
    latencies: list[array[float]] = [array("d") for _ in range(clients)]

    def work(i: int) -> None:
        found = results[i]
        try:
            client = open_client(i)
        except BaseException:
            found["setup_error"] = traceback.format_exc(limit=3)
            barrier.abort()
            return
        found["run_id"] = client.run_id
        try:
            barrier.wait()
        except threading.BrokenBarrierError:  # another client could not start
            return
        clock = time.perf_counter
        deadline = started["clock"] + seconds
        spent = latencies[i]
        logged = errors = step = 0
        samples: list[str] = []
        while True:
            before = clock()
            if rate is not None and before < started["clock"] + step / rate:
                time.sleep(started["clock"] + step / rate - before)
                before = clock()
            if before >= deadline:
                break
            try:
                client.log(step)
            except Exception as exc:
                errors += 1
                if len(samples) < 3:
                    samples.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            else:
                logged += 1
            spent.append(clock() - before)
            step += 1
        calls_done = clock()
        try:
            client.finish()
        except Exception as exc:
            found["finish_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        found.update(
            logged=logged,
            errors=errors,
            error_samples=samples,
            finish_seconds=clock() - calls_done,
            done_at=clock() - started["clock"],
        )

    threads = [threading.Thread(target=work, args=(i,), name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    broken = [r["setup_error"] for r in results if "setup_error" in r]
    if broken:
        raise RuntimeError(f"{len(broken)} clients could not start their run; first:\n{broken[0]}")
    cpu = cpu_seconds() - started["cpu"]
    wall = max(r["done_at"] for r in results)
    calls = sum(len(spent) for spent in latencies)
    every = max(1, calls // SAMPLE)
    ordered = sorted(x for spent in latencies for x in spent[::every])
    logged = sum(r["logged"] for r in results)
    finishes = sorted(r["finish_seconds"] for r in results)
    return {
        "clients": clients,
        "seconds": seconds,
        "rate": rate,
        "logged": logged,
        "errors": sum(r["errors"] for r in results),
        "finish_errors": [r["finish_error"] for r in results if "finish_error" in r],
        "error_samples": [s for r in results for s in r["error_samples"]][:5],
        "wall_seconds": wall,
        "per_second": logged / wall,
        "calls_per_second": calls / seconds,
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": max((max(spent) for spent in latencies if spent), default=math.nan),
        "latency_sample_every": every,
        "finish_seconds_median": percentile(finishes, 50),
        "finish_seconds_max": finishes[-1],
        "client_cpu_seconds": cpu,
        "client_cpu_share": cpu / wall,
        "started_at": started["wall"],
        "runs": {r["run_id"]: {"logged": r["logged"], "errors": r["errors"]} for r in results},
    }


class MlflowRun:
    """One client: an MLflow run of this thread, one ``mlflow.log_metric`` per value."""

    def __init__(self, index: int, synchronous: bool) -> None:
        import mlflow

        self.mlflow = mlflow
        self.synchronous = synchronous
        self.run_id = mlflow.start_run(run_name=f"client-{index}").info.run_id

    def log(self, step: int) -> None:
        self.mlflow.log_metric(KEY, float(step), step=step, synchronous=self.synchronous)

    def finish(self) -> None:
        self.mlflow.end_run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="N clients logging metrics to an MLflow server")
    load.add_argument("--url", required=True)
    load.add_argument("--clients", type=int, default=32)
    load.add_argument("--seconds", type=float, default=60.0)
    load.add_argument("--mode", choices=("sync", "async"), default="sync")
    args = parser.parse_args(argv)
    os.environ.update(TELEMETRY_OFF)
    out = protocol_stream()

    def announce(event: dict[str, Any]) -> None:
        out.write(json.dumps(event) + "\n")

    import mlflow

    mlflow.set_tracking_uri(args.url)
    mlflow.set_experiment(EXPERIMENT)
    synchronous = args.mode == "sync"
    found = drive(lambda i: MlflowRun(i, synchronous), args.clients, args.seconds, announce)
    found["mode"] = args.mode
    found["mlflow"] = mlflow.__version__
    announce(found)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

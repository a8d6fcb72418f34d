"""Benchmark molen on a Ray cluster: a sweep and batch scoring, as a team runs them.

Everything is real and local: a Ray head and a second Ray node (one CPU each, 2 CPUs in all,
started with ``ray start`` on loopback), a PostgreSQL server for the runs and moto's S3 server
for the objects, the data and the scored files.

* **sweep**: ``molen exp run --grid train.seed=… --executor ray`` with 16 trials of a training
  that burns ~2 s of CPU (``train.py`` reads the tracked data and params, writes a model and
  metrics). The training's own time is measured by running ``python train.py`` alone; the ideal
  is trials x that time / 2 CPUs. Target: the sweep's wall time within 1.3x of the ideal (the
  cluster's start is measured and reported apart). Each repetition times three trainings alone
  right before its sweep and is compared with them (a VM's speed drifts over minutes); the
  result is the median ratio. Each repetition sweeps new seeds, so no run cache answers.
* **scoring**: 10 million rows in 20 Parquet files in the bucket, scored by a registered
  scikit-learn model with ``molen predict … --executor ray`` (2 workers) and with ``molen
  predict`` on this machine over the same files: rows per second of each, and the peak memory
  of each Ray worker (bounded by ``--chunk-size``, not by the file or the 10 million rows).

    .venv/bin/python benchmarks/bench_ray.py [--quick] [--repeat 3] [--only sweep|scoring]

The table goes to stdout, the samples to ``benchmarks/results/ray.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_server import postgres
from harness import (
    document,
    heading,
    loadavg,
    log,
    now,
    report,
    run_selected,
    standard_options,
    table,
    verdict,
    work_folder,
    write_results,
)
from peers import REPO_ROOT
from s3_server import ACCESS_KEY, REGION, SECRET_KEY, moto_s3

BIN = Path(sys.executable).parent
MOLEN = [str(BIN / "molen")]
BUCKET = "bench"
SWEEP_TARGET = 1.3

TRAIN = """
import json, pathlib, time, yaml
params = yaml.safe_load(open("params.yaml"))["train"]
rows = pathlib.Path("data/raw.csv").read_text().splitlines()[1:]
# ~2 s of CPU, the stand-in for a small model's training
end, state = time.process_time() + params["seconds"], params["seed"]
while time.process_time() < end:
    for _ in range(10_000):
        state = (state * 1103515245 + 12345) % 2**31
pathlib.Path("model.json").write_text(json.dumps({"seed": params["seed"], "state": state}))
pathlib.Path("metrics.json").write_text(json.dumps({"score": state / 2**31, "rows": len(rows)}))
"""
PIPELINE = """
stages:
  train:
    cmd: python train.py
    deps: [data/raw.csv, train.py]
    params: [train.seed, train.seconds]
    outs: [model.json]
    metrics: [metrics.json]
ray:
  trial:
    cpus: 1
"""
TRAIN_SCORER = """
import molen, numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(5000, 8)), columns=[f"f{i}" for i in range(8)])
y = (X["f0"] + X["f1"] - X["f2"] > 0).astype(int)
with molen.start_run() as run:
    run.log_model(LogisticRegression().fit(X, y), "scorer", reference=X, y_reference=y)
"""


@dataclass(frozen=True)
class Plan:
    trials: int = 16
    train_seconds: float = 2.0
    repeat: int = 3
    rows: int = 10_000_000
    files: int = 20
    chunk_size: int = 100_000


QUICK = Plan(trials=8, train_seconds=1.0, repeat=1, rows=1_000_000, files=8)


@dataclass
class Row:
    benchmark: str
    value: str
    target: str
    passed: bool | None
    note: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        output = done.stdout[-2000:] + done.stderr[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{output}")
    return done


def pair(cwd: Path, env: dict[str, str]) -> float:
    """Seconds for two ``python train.py`` side by side: how much of 2x the 2 CPUs give."""
    started = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "train.py"], cwd=cwd, env=env) for _ in range(2)]
    if any(process.wait() != 0 for process in running):
        raise RuntimeError("train.py failed")
    return time.perf_counter() - started


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    run(cmd, cwd, env)
    return time.perf_counter() - started


# -- the cluster ------------------------------------------------------------------------------------


@dataclass
class Cluster:
    address: str
    start_seconds: float
    temp: Path


@contextlib.contextmanager
def ray_cluster(work: Path, env: dict[str, str]) -> Iterator[Cluster]:
    """A head node and a second node, one CPU each, on loopback; how long until both serve."""
    port = free_port()
    temp = Path(f"/tmp/molen-bench-ray-{os.getpid()}")  # short: Ray's socket paths are limited
    env = {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    common = ["--num-cpus", "1", "--object-store-memory", str(500 * 1024**2), "--block"]
    address = f"127.0.0.1:{port}"
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
             "--include-dashboard", "false", "--temp-dir", str(temp), *common],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
    ]  # fmt: skip
    try:
        wait_for_cpus(address, 1, env)
        processes.append(
            subprocess.Popen(
                [str(BIN / "ray"), "start", "--address", address, "--node-ip-address", "127.0.0.1", *common],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
        )  # fmt: skip
        wait_for_cpus(address, 2, env)
        cluster = Cluster(address, time.perf_counter() - started, temp)
        log(f"ray: 2 nodes at {address} in {cluster.start_seconds:.1f} s")
        yield cluster
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, 15)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def wait_for_cpus(address: str, cpus: int, env: dict[str, str]) -> None:
    probe = (
        f"import ray; ray.init(address='{address}', logging_level='ERROR'); "
        "print(ray.cluster_resources().get('CPU', 0))"
    )
    deadline = time.monotonic() + 120
    while True:
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
        if done.returncode == 0 and float(done.stdout.split()[-1]) >= cpus:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray cluster did not reach {cpus} CPUs: {done.stderr[-800:]}")
        time.sleep(0.25)


class WorkerMemory:
    """Samples, every 0.1 s while in use, the peak resident memory (VmHWM) of each Ray worker
    process on this machine (``ray::…`` processes; they are gone once their job ends)."""

    def __init__(self) -> None:
        import threading

        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    command = (status.parent / "cmdline").read_bytes().split(b"\0")[0].decode()
                    if not command.startswith("ray::"):
                        continue
                    for line in status.read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            pid = int(status.parent.name)
                            self.peaks[pid] = max(self.peaks.get(pid, 0), int(line.split()[1]) * 1024)
                except (OSError, ValueError):
                    continue


# -- the benchmarks ---------------------------------------------------------------------------------


def bench_sweep(plan: Plan, setting: dict[str, Any], raw: dict[str, Any]) -> list[Row]:
    work, env, cluster = setting["work"], setting["env"], setting["cluster"]
    root = work / "sweep"
    run([*MOLEN, "init", str(root)], work, env)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "raw.csv").write_text("id,x\n" + "".join(f"{i},{i * 0.5}\n" for i in range(10_000)))
    (root / "train.py").write_text(TRAIN)
    (root / "params.yaml").write_text(f"train:\n  seed: 0\n  seconds: {plan.train_seconds}\n")
    with open(root / "molen.yaml", "a") as config:
        config.write(PIPELINE)
    run([*MOLEN, "data", "add", "data/raw.csv"], root, env)
    # A VM's speed drifts over minutes, so each sweep is compared with trainings timed just
    # before it: its ratio is its wall time over 16 x (median of 3 trainings alone) / 2.
    training: list[float] = []
    side_by_side: list[float] = []  # what this machine's 2 CPUs give at once
    walls: list[float] = []
    ratios: list[float] = []
    for repetition in range(plan.repeat):
        alone_now = [timed([sys.executable, "train.py"], root, env) for _ in range(3)]
        training += alone_now
        side_by_side.append(pair(root, env))
        seeds = ",".join(str(repetition * plan.trials + i + 1) for i in range(plan.trials))
        cmd = [*MOLEN, "exp", "run", "--grid", f"train.seed={seeds}", "--name", f"sweep{repetition}",
               "--executor", "ray", "--ray-address", cluster.address]  # fmt: skip
        walls.append(timed(cmd, root, env))
        ratios.append(walls[-1] / (plan.trials * statistics.median(alone_now) / 2))
        log(f"sweep {repetition + 1}/{plan.repeat}: {walls[-1]:.1f} s = {ratios[-1]:.3f}x "
            f"(training alone {statistics.median(alone_now):.2f} s)")  # fmt: skip
    alone, paired = statistics.median(training), statistics.median(side_by_side)
    wall = statistics.median(walls)
    ideal = plan.trials * alone / 2
    raw["sweep"] = {
        "training_alone": training,
        "two_side_by_side": side_by_side,
        "ideal": ideal,
        "walls": walls,
        "ratios": ratios,
        "cluster_start": cluster.start_seconds,
    }
    ratio = statistics.median(ratios)
    return [
        Row(f"one training alone (median of {len(training)})", f"{alone:.2f} s", "", None),
        Row(
            f"two trainings side by side, no Ray (median of {len(side_by_side)})",
            f"{paired:.2f} s",
            "",
            None,
            note=f"the sweep is {wall / (plan.trials * paired / 2):.2f}x of {plan.trials} x this / 2",
        ),
        Row(f"ideal: {plan.trials} x training / 2 CPUs", f"{ideal:.1f} s", "", None),
        Row("Ray cluster start (2 nodes)", f"{cluster.start_seconds:.1f} s", "", None),
        Row(
            f"{plan.trials}-trial sweep on Ray (median of {plan.repeat})",
            f"{wall:.1f} s = {ratio:.3f}x ideal",
            f"<= {SWEEP_TARGET}x",
            ratio <= SWEEP_TARGET,
            note=f"with the cluster's start: {wall + cluster.start_seconds:.1f} s; each sweep over the "
            "trainings timed just before it: "
            + ", ".join(f"{w:.1f} s = {r:.3f}x" for w, r in zip(walls, ratios, strict=True)),
        ),
    ]


def bench_scoring(plan: Plan, setting: dict[str, Any], raw: dict[str, Any]) -> list[Row]:
    import boto3
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    work, env, cluster = setting["work"], setting["env"], setting["cluster"]
    root = work / "scoring"
    run([*MOLEN, "init", str(root)], work, env)
    env = {**env, "MOLEN_MODELS_IMPORTANCE": "false"}
    run([sys.executable, "-c", TRAIN_SCORER], root, env)
    run([*MOLEN, "models", "alias", "scorer", "1", "production"], root, env)
    s3 = boto3.client(
        "s3",
        endpoint_url=setting["endpoint"],
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    rng = np.random.default_rng(1)
    per_file = plan.rows // plan.files
    staging = work / "parts"
    staging.mkdir()
    for index in range(plan.files):
        columns = {f"f{i}": rng.normal(size=per_file) for i in range(8)}
        path = staging / f"part-{index:03d}.parquet"
        pq.write_table(pa.table(columns), path)
        s3.upload_file(str(path), BUCKET, f"in/part-{index:03d}.parquet")
        path.unlink()
    log(f"scoring: {plan.rows:,} rows in {plan.files} files in the bucket")
    source = f"s3://{BUCKET}/in/*.parquet"
    chunk = ["--chunk-size", str(plan.chunk_size)]
    on_ray, here, peaks, local_peaks = [], [], [], []
    for repetition in range(plan.repeat):
        cmd = [*MOLEN, "predict", "scorer@production", "-i", source, "-o", f"s3://{BUCKET}/ray{repetition}/",
               "--executor", "ray", "--ray-address", cluster.address, *chunk]  # fmt: skip
        with WorkerMemory() as memory:
            on_ray.append(timed(cmd, root, env))
        peaks.append(max(memory.peaks.values(), default=0))
        raw.setdefault("worker_peaks", []).append(sorted(memory.peaks.values()))
        log(f"scoring on Ray {repetition + 1}: {on_ray[-1]:.1f} s, worker peak {peaks[-1] / 2**20:.0f} MiB")
        # the same files through `molen predict` on this machine (it reads the glob and writes one file)
        target = f"s3://{BUCKET}/local{repetition}.parquet"
        started = time.perf_counter()
        local = subprocess.run(  # GNU time prints the peak resident memory (KiB) last
            ["/usr/bin/time", "-f", "%M", *MOLEN, "predict", "scorer@production", "-i", source, "-o", target,
             *chunk],
            cwd=root, env=env, capture_output=True, text=True,
        )  # fmt: skip
        if local.returncode != 0:
            raise RuntimeError(f"local molen predict failed: {local.stderr[-2000:]}")
        local_peaks.append(int(local.stderr.split()[-1]) * 1024)
        here.append(time.perf_counter() - started)
        log(f"scoring here {repetition + 1}/{plan.repeat}: {here[-1]:.1f} s")
    small = ["--chunk-size", str(plan.chunk_size // 10)]
    cmd = [*MOLEN, "predict", "scorer@production", "-i", source, "-o", f"s3://{BUCKET}/small-chunks/",
           "--executor", "ray", "--ray-address", cluster.address, *small]  # fmt: skip
    with WorkerMemory() as memory:
        small_seconds = timed(cmd, root, env)
    small_peak = max(memory.peaks.values(), default=0)
    log(f"scoring on Ray, smaller chunks: {small_seconds:.1f} s, worker peak {small_peak / 2**20:.0f} MiB")
    raw["scoring"] = {
        "ray": on_ray,
        "local": here,
        "worker_peak_bytes": peaks,
        "local_peak_bytes": local_peaks,
        "rows": plan.rows,
        "small_chunks": {"seconds": small_seconds, "worker_peak_bytes": small_peak},
    }
    ray_rate, local_rate = plan.rows / statistics.median(on_ray), plan.rows / statistics.median(here)
    peak = max(peaks)
    file_bytes = per_file * 8 * 8
    return [
        Row(f"scoring {plan.rows:,} rows on Ray, 2 workers", f"{ray_rate:,.0f} rows/s", "", None,
            note=f"median of {plan.repeat}: {statistics.median(on_ray):.1f} s"),
        Row(f"scoring {plan.rows:,} rows here (molen predict)", f"{local_rate:,.0f} rows/s", "", None,
            note=f"median of {plan.repeat}: {statistics.median(here):.1f} s"),
        Row("Ray / here", f"{ray_rate / local_rate:.2f}x", "", None),
        Row("peak memory of molen predict here", f"{max(local_peaks) / 2**20:.0f} MiB", "", None),
        Row(
            "peak memory of a Ray worker",
            f"{peak / 2**20:.0f} MiB",
            "",
            None,
            note=f"chunk {plan.chunk_size:,} rows; a file is {per_file:,} rows ({file_bytes / 2**20:.0f} MiB "
            f"of features), all files {plan.rows * 64 / 2**20:,.0f} MiB",
        ),
        Row(
            f"peak memory of a Ray worker, chunks of {plan.chunk_size // 10:,}",
            f"{small_peak / 2**20:.0f} MiB",
            "",
            None,
            note=f"{plan.rows / small_seconds:,.0f} rows/s",
        ),
    ]  # fmt: skip


BENCHES = {"sweep": bench_sweep, "scoring": bench_scoring}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    standard_options(
        parser,
        results=REPO_ROOT / "benchmarks" / "results" / "ray.json",
        quick="8 trials of 1 s, 1 million rows, one repetition",
        keep="keep the work folder",
        only=list(BENCHES),
    )
    parser.add_argument("--repeat", type=int, help="repetitions of each measure (default 3, 1 with --quick)")
    args = parser.parse_args()
    plan = QUICK if args.quick else Plan()
    if args.repeat:
        plan = Plan(**{**plan.__dict__, "repeat": args.repeat})
    date, started = now(), time.perf_counter()
    facts = {"nproc": os.cpu_count(), "machine": platform.machine(), "system": platform.platform(),
             "loadavg_at_start": loadavg()}  # fmt: skip
    raw: dict[str, Any] = {}
    with work_folder("ray", args.keep) as work, postgres(work) as database, moto_s3(BUCKET) as endpoint:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "MOLEN_TRACKING_URI": database.url(database.create("molen")),
            "MOLEN_OBJECTS_URL": f"s3://{BUCKET}/molen",
            "MOLEN_OBJECTS_S3_ENDPOINT_URL": endpoint,
            "PATH": f"{BIN}:{os.environ['PATH']}",
        }
        with ray_cluster(work, env) as cluster:
            setting = {"work": work, "env": env, "cluster": cluster, "endpoint": endpoint}
            rows = run_selected(BENCHES, args.only, (plan, setting), raw)
    runtime = time.perf_counter() - started
    text = "\n".join(heading("Ray", date, args.quick, facts)) + "\n\n"
    cells = [[r.benchmark, r.value, r.target, verdict(r.passed)] for r in rows]
    text += table(["benchmark", "value", "target", "pass"], cells, right=(1,))
    report(text, rows, runtime)
    write_results(args.output, document(date, args.quick, facts, plan, runtime, rows, raw))
    return 1 if any(r.passed is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

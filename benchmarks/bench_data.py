"""Data-versioning benchmark: molen against DVC, measured in the same run on the same machine.

Usage::

    .venv/bin/python benchmarks/bench_data.py [--quick] [--output PATH] [--keep] [--only NAME ...]

Both tools are measured by their own side script, each timing its tool's command line as
fresh subprocesses with identical data (``datasets.py``), phases and workspace handling:
``benchmarks/molen_data_side.py`` under molen's python and ``benchmarks/dvc_data_peer.py``
under the python of the DVC venv that ``benchmarks/peers.py`` builds in ``.bench/dvc``. Each
prints one JSON object. The two tools are interleaved per benchmark: benchmarks with a fresh
workspace per sample (``add_big``, ``add_many``) run as single-sample rounds alternating
DVC/molen, molen/DVC, ...; the others run once per tool, the order alternating from one
benchmark to the next. Before anything is timed, both tools run every command once on a few
files (untimed warm-up: molen's bytecode cache in ``.bench/pycache``, the page cache).

Nothing is deleted until the whole run is over: every side gets its own folder under
``.bench/tmp/data-*`` and keeps it (``--keep``), because on this machine's ext4 mounted with
``discard`` a mass delete slows down the file creation that follows it (see
``Bench.discard`` in the peer), which would bill one tool's clean-up to the other. The folder
goes at the end (unless ``--keep``). S3 runs against a fresh in-memory moto server per tool
(``s3_server.py``, on loopback, in this process), so neither tool lists the other's objects;
the server's CPU time during each tool's S3 run is recorded (moto is one Python process: at
~2.5 ms of CPU per request it, not the tool, sets the pace). A disk probe (2,000 small files
created, kept) runs before every benchmark and records the file system's state; at the start
the run waits (``--settle``) for a disk slowed down by an earlier mass delete to recover.

Targets (DVC time / molen time, medians): add a 1 GiB file >= 5x; add 20k small files >= 5x;
status with nothing changed >= 10x; push and pull (fetch into an empty cache) to a local
folder >= 5x each; push with nothing to send >= 10x; the same push, no-op push and pull
against S3 >= 5x; checkout of the 20k files after deleting them >= 3x. The clone-like pull
(empty cache and workspace), the fixed cost of a data command and ``--version`` are shown
without a target. The table goes to stdout, progress to stderr, and everything (every sample
of every side) to ``benchmarks/results/data.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from harness import loadavg, log  # noqa: E402
from peers import BENCH_DIR, PEERS, ensure_dvc_venv  # noqa: E402
from s3_server import moto_s3  # noqa: E402

MOLEN_PYTHON = Path(sys.executable)
SIDE = HERE / "molen_data_side.py"
PEER = HERE / "dvc_data_peer.py"
RESULTS = HERE / "results" / "data.json"
TIMEOUT = 3600  # seconds for one side process (all its repeats)
TOOLS = ("dvc", "molen")


@dataclass(frozen=True)
class Plan:
    """How much of each benchmark to run (full or --quick)."""

    size_mib: int = 1024
    count: int = 20_000
    add_big_rounds: int = 3  # single-sample rounds per tool, interleaved
    add_many_rounds: int = 3
    status_repeat: int = 5
    checkout_repeat: int = 3
    local_repeat: int = 2  # fresh remote per repeat
    s3_repeat: int = 1  # DVC needs ~5 minutes per S3 repeat at 20k files
    version_repeat: int = 5


FULL = Plan()
QUICK = Plan(
    size_mib=256,
    count=5_000,
    add_big_rounds=1,
    add_many_rounds=1,
    status_repeat=1,
    checkout_repeat=1,
    local_repeat=1,
    s3_repeat=1,
    version_repeat=1,
)

BENCHMARKS = ("cli_version", "add_big", "add_many", "status", "checkout", "push_pull_local", "push_pull_s3")


# -- running the sides ---------------------------------------------------------------------------


class SideFailed(RuntimeError):
    """A side process failed; ``detail`` holds the end of its output (molen's error text)."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class Runner:
    """Starts the side processes, each in a fresh folder under ``work``."""

    def __init__(self, work: Path, dvc_python: Path) -> None:
        self.work = work
        self.dvc_python = dvc_python
        self.count = 0

    def folder(self, tool: str, label: str) -> Path:
        self.count += 1
        return self.work / f"{self.count:03d}-{tool}-{label}"

    def run(self, tool: str, benchmark: str, *args: str, label: str | None = None) -> dict[str, Any]:
        """Run one side process; its progress lines (timed commands) are echoed to stderr."""
        python = MOLEN_PYTHON if tool == "molen" else self.dvc_python
        script = SIDE if tool == "molen" else PEER
        folder = self.folder(tool, label or benchmark)
        cmd = [str(python), str(script), benchmark, "--dir", str(folder), "--keep", *args]
        process = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        tail: list[str] = []
        out: list[str] = []

        def echo() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                tail.append(line)
                del tail[:-60]
                if line.startswith("[") and "] setup:" not in line:
                    sys.stderr.write("    " + line)
                    sys.stderr.flush()

        def collect() -> None:
            assert process.stdout is not None
            out.append(process.stdout.read())

        readers = [threading.Thread(target=f, daemon=True) for f in (echo, collect)]
        for reader in readers:
            reader.start()
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise SideFailed(f"{tool} {benchmark} timed out after {TIMEOUT} s", "".join(tail)) from None
        for reader in readers:
            reader.join(timeout=30)
        stdout = "".join(out)
        detail = "".join(tail)[-3000:]
        if process.returncode != 0:
            raise SideFailed(f"{tool} {benchmark} exited with {process.returncode}", detail)
        lines = [line for line in stdout.splitlines() if line.strip()]
        if not lines:
            raise SideFailed(f"{tool} {benchmark} printed nothing", detail)
        data: dict[str, Any] = json.loads(lines[-1])
        return data


def merge(results: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Every phase's samples over several runs of one side: phase -> seconds."""
    samples: dict[str, list[float]] = {}
    for result in results:
        for name, phase in result["phases"].items():
            samples.setdefault(name, []).extend(phase["seconds"])
    return samples


@dataclass
class Outcome:
    """One benchmark's results: per tool, the side results, merged samples, or the error."""

    results: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {t: [] for t in TOOLS})
    errors: dict[str, str] = field(default_factory=dict)
    loadavg: list[list[float] | None] = field(default_factory=list)
    # S3 only: CPU seconds of the moto server (threads of this otherwise idle process) and the
    # wall seconds of the same side process, per tool
    server_cpu: dict[str, list[float]] = field(default_factory=dict)

    def samples(self, tool: str) -> dict[str, list[float]]:
        return merge(self.results[tool])


def run_benchmark(runner: Runner, name: str, index: int, plan: Plan) -> Outcome:
    """Run ``name`` for both tools, interleaved; a failing side is recorded, not fatal."""
    outcome = Outcome()
    outcome.loadavg.append(loadavg())
    many = ["--count", str(plan.count)]
    rounds, args = 1, []
    if name == "add_big":
        rounds, args = plan.add_big_rounds, ["--size-mib", str(plan.size_mib), "--repeat", "1"]
    elif name == "add_many":
        rounds, args = plan.add_many_rounds, [*many, "--repeat", "1"]
    elif name == "status":
        args = [*many, "--repeat", str(plan.status_repeat)]
    elif name == "checkout":
        args = [*many, "--repeat", str(plan.checkout_repeat)]
    elif name == "push_pull_local":
        args = [*many, "--repeat", str(plan.local_repeat)]
    elif name == "push_pull_s3":
        args = [*many, "--repeat", str(plan.s3_repeat)]
    elif name == "cli_version":
        args = ["--repeat", str(plan.version_repeat)]
    for r in range(rounds):
        order = TOOLS if (index + r) % 2 == 0 else TOOLS[::-1]
        for tool in order:
            if tool in outcome.errors:
                continue
            log(f"{name}: {tool} (round {r + 1}/{rounds}, load average {loadavg()})")
            t0 = time.perf_counter()
            try:
                if name == "push_pull_s3":
                    # a fresh in-memory server per tool: neither lists the other's objects
                    with moto_s3("bench") as endpoint:
                        cpu0, wall0 = time.process_time(), time.perf_counter()
                        result = runner.run(tool, name, *args, "--endpoint", endpoint, "--bucket", "bench")
                        outcome.server_cpu[tool] = [
                            round(time.process_time() - cpu0, 2),
                            round(time.perf_counter() - wall0, 2),
                        ]
                else:
                    result = runner.run(tool, name, *args)
            except SideFailed as exc:
                outcome.errors[tool] = f"{exc}\n{exc.detail}".strip()
                log(f"{name}: {tool} FAILED: {exc}")
                continue
            outcome.results[tool].append(result)
            log(f"{name}: {tool} done in {time.perf_counter() - t0:.1f} s")
    outcome.loadavg.append(loadavg())
    return outcome


class DiskProbe:
    """Time the creation of a few thousand small files (kept: nothing is deleted mid-run).

    On this machine's ext4 (``discard``, virtual disk) file creation gets many times slower
    for minutes after a mass delete, by this or any other process (the end of an earlier
    benchmark run, a test suite): the probe records the disk's state next to every benchmark,
    and ``settle`` waits for a slow disk to recover before anything is measured.
    """

    FILES = 2_000
    SLOW = 0.3  # seconds for FILES files; a settled disk takes ~0.1 s here

    def __init__(self, work: Path) -> None:
        self.work = work
        self.samples: list[dict[str, Any]] = []

    def probe(self, label: str) -> float:
        from datasets import make_small_files

        start = time.perf_counter()
        make_small_files(self.work / f"disk-probe-{len(self.samples):03d}", self.FILES, seed=99)
        if hasattr(os, "sync"):
            os.sync()
        seconds = round(time.perf_counter() - start, 3)
        self.samples.append({"label": label, "seconds": seconds, "loadavg": loadavg()})
        return seconds

    def settle(self, max_wait: float) -> None:
        deadline = time.monotonic() + max_wait
        seconds = self.probe("start")
        while seconds > self.SLOW and time.monotonic() < deadline:
            log(f"disk is slow ({self.FILES} files in {seconds:.2f} s, settled ~0.1 s): waiting")
            time.sleep(15)
            seconds = self.probe("settling")
        log(f"disk probe: {self.FILES} files in {seconds:.3f} s")


def warm_up(runner: Runner) -> None:
    """Untimed: every command of both tools once on a few files."""
    log("warm-up (untimed)")
    with moto_s3("warm-up") as endpoint:
        s3 = ["--endpoint", endpoint, "--bucket", "warm-up"]
        runner.run("molen", "warm_up", "--count", "50", *s3)
        runner.run("dvc", "add_big", "--size-mib", "8", "--repeat", "1", label="warm-up-big")
        runner.run("dvc", "status", "--count", "50", "--repeat", "1", label="warm-up-status")
        runner.run("dvc", "checkout", "--count", "50", "--repeat", "1", label="warm-up-checkout")
        runner.run("dvc", "push_pull_local", "--count", "50", label="warm-up-local")
        runner.run("dvc", "push_pull_s3", "--count", "50", *s3, label="warm-up-s3")
        runner.run("dvc", "cli_version", "--repeat", "1", label="warm-up-version")


# -- the table ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: medians in seconds; ratio = DVC / molen."""

    benchmark: str
    molen: float | None
    dvc: float | None
    ratio: float | None
    target: float | None
    passed: bool | None
    molen_samples: int = 0
    dvc_samples: int = 0
    note: str = ""


# benchmark, molen phase, DVC phase, label, target (None: shown without one)
ROWS: list[tuple[str, str, str, str, float | None]] = [
    ("add_big", "add", "add", "add: one {size} file", 5),
    ("add_many", "add", "add", "add: {count} small files", 5),
    ("status", "status", "status", "status, nothing changed (vs `dvc status`)", 10),
    ("status", "status", "data_status", "status, nothing changed (vs `dvc data status`)", 10),
    ("checkout", "checkout", "checkout", "checkout {count} files after deleting them", 3),
    ("push_pull_local", "push", "push", "local folder: push", 5),
    ("push_pull_local", "push_noop", "push_noop", "local folder: push, nothing to send", 10),
    ("push_pull_local", "pull_empty_cache", "pull_empty_cache", "local folder: pull into empty cache", 5),
    (
        "push_pull_local",
        "pull_empty_cache_and_workspace",
        "pull_empty_cache_and_workspace",
        "local folder: pull, empty cache + workspace",
        None,
    ),
    ("push_pull_s3", "push", "push", "S3 (moto): push", 5),
    ("push_pull_s3", "push_noop", "push_noop", "S3 (moto): push, nothing to send", 5),
    ("push_pull_s3", "pull_empty_cache", "pull_empty_cache", "S3 (moto): pull into empty cache", 5),
    (
        "push_pull_s3",
        "pull_empty_cache_and_workspace",
        "pull_empty_cache_and_workspace",
        "S3 (moto): pull, empty cache + workspace",
        None,
    ),
    ("status", "status_empty_repo", "status_empty_repo", "status in a project tracking nothing", None),
    ("cli_version", "version", "version", "`--version` (start-up)", None),
]

NOTES = {
    "pull_empty_cache": "molen: `molen data fetch`; DVC: `dvc pull` (workspace intact)",
    "status_empty_repo": "fixed cost of a data command",
}


def build_rows(outcomes: dict[str, Outcome], plan: Plan) -> list[Row]:
    size = f"{plan.size_mib / 1024:g} GiB" if plan.size_mib >= 1024 else f"{plan.size_mib} MiB"
    rows = []
    for benchmark, ours, theirs, label, target in ROWS:
        outcome = outcomes.get(benchmark)
        if outcome is None:
            continue
        molen = outcome.samples("molen").get(ours, [])
        dvc = outcome.samples("dvc").get(theirs, [])
        m = statistics.median(molen) if molen else None
        d = statistics.median(dvc) if dvc else None
        ratio = d / m if m and d else None
        passed = None if target is None or ratio is None else ratio >= target
        if target is not None and ratio is None:
            passed = False
        note = NOTES.get(ours, "")
        errors = [f"{tool} failed" for tool in TOOLS if tool in outcome.errors]
        if errors:
            note = "; ".join([*errors, note]) if note else "; ".join(errors)
        rows.append(
            Row(
                label.format(size=size, count=f"{plan.count:,}"),
                m,
                d,
                ratio,
                target,
                passed,
                len(molen),
                len(dvc),
                note,
            )
        )
    return rows


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "ERROR"
    return f"{value * 1000:,.0f} ms" if value < 1 else f"{value:,.2f} s"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:,.1f}x"


def table(rows: list[Row]) -> str:
    return harness.table(
        ["benchmark", "molen", "DVC", "ratio", "target", "pass"],
        [
            [
                r.benchmark,
                fmt_seconds(r.molen),
                fmt_seconds(r.dvc),
                fmt_ratio(r.ratio),
                "-" if r.target is None else f">={r.target:g}x",
                harness.verdict(r.passed),
            ]
            for r in rows
        ],
        right=(1, 2, 3, 4),
    )


# -- machine facts -----------------------------------------------------------------------------------


def _first_line_with(path: str, prefix: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _mount_of(path: Path) -> dict[str, str] | None:
    """File system type and mount options of the mount holding ``path``."""
    target = os.path.realpath(path)
    best: dict[str, str] | None = None
    best_len = -1
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 4:
                    continue
                mount = parts[1].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= best_len:
                    best_len = len(mount)
                    best = {"mount": mount, "device": parts[0], "type": parts[2], "options": parts[3]}
    except OSError:
        return None
    return best


def _package_version(python: Path, package: str) -> str | None:
    code = f"from importlib.metadata import version; print(version({package!r}))"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def _git(*words: str) -> str:
    result = subprocess.run(["git", *words], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def machine_facts(dvc_python: Path) -> dict[str, Any]:
    mem_kib = _first_line_with("/proc/meminfo", "MemTotal")
    changed = [line for line in _git("status", "--porcelain", "--", "src").splitlines() if line]
    dvc_py = subprocess.run(
        [str(dvc_python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": _first_line_with("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(mem_kib.split()[0]) / 1024**2, 1) if mem_kib else None,
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "disk": _mount_of(BENCH_DIR),
        "python_molen": platform.python_version(),
        "python_dvc": dvc_py,
        "molen": _package_version(MOLEN_PYTHON, "molen"),
        "molen_commit": _git("rev-parse", "--short", "HEAD") or None,
        "molen_src_changed_files": changed,
        "dvc": _package_version(dvc_python, "dvc"),
        "dvc_s3": _package_version(dvc_python, "dvc-s3"),
        "dvc_requirements": PEERS["dvc"],
        "moto": _package_version(MOLEN_PYTHON, "moto"),
        "boto3": _package_version(MOLEN_PYTHON, "boto3"),  # molen's S3 client
        "loadavg_at_start": loadavg(),
    }


def header(facts: dict[str, Any], date: str, quick: bool, plan: Plan) -> str:
    load = facts["loadavg_at_start"]
    disk = facts["disk"] or {}
    dirty = len(facts["molen_src_changed_files"])
    return "\n".join(
        [
            f"molen data-versioning benchmark{' (--quick)' if quick else ''}, {date}",
            f"machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory_gib']} GiB RAM, "
            f"{facts['machine']}, {facts['system']}",
            f"disk: {disk.get('type')} on {disk.get('device')} ({disk.get('options')})",
            f"load average at start: {' '.join(f'{x:.2f}' for x in load) if load else '?'}",
            f"molen {facts['molen']} (commit {facts['molen_commit']}"
            + (f", {dirty} changed file(s) in src/" if dirty else ", src/ clean")
            + f"), python {facts['python_molen']}; DVC {facts['dvc']} + dvc-s3 {facts['dvc_s3']}, "
            f"python {facts['python_dvc']}; S3: moto {facts['moto']} in memory on loopback",
            f"data: {plan.count:,} files of 1-4 KiB in 100 folders, one {plan.size_mib} MiB file; "
            "both tools on their default link/cache type (reflink,copy: copies on ext4)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark molen data versioning against DVC.")
    harness.standard_options(
        parser,
        results=RESULTS,
        quick="5,000 files, 256 MiB, one repeat",
        keep="keep the workspaces in .bench/tmp",
        only=BENCHMARKS,
        only_help="run only these (repeatable)",
    )
    parser.add_argument("--no-warm-up", action="store_true", help="skip the untimed warm-up")
    parser.add_argument(
        "--settle",
        type=float,
        default=300,
        help="wait up to this many seconds for a slow disk to recover before measuring (default 300)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    date = harness.now()

    dvc_python = ensure_dvc_venv()
    facts = machine_facts(dvc_python)
    print(header(facts, date, args.quick, plan), flush=True)

    outcomes: dict[str, Outcome] = {}
    timings: dict[str, float] = {}
    with harness.work_folder("data", args.keep) as work:
        runner = Runner(work, dvc_python)
        disk = DiskProbe(work)
        disk.settle(args.settle)
        if not args.no_warm_up:
            t0 = time.perf_counter()
            warm_up(runner)
            timings["warm_up"] = time.perf_counter() - t0
        for index, name in enumerate(BENCHMARKS):
            if args.only and name not in args.only:
                continue
            disk.probe(f"before {name}")
            t0 = time.perf_counter()
            outcomes[name] = run_benchmark(runner, name, index, plan)
            timings[name] = time.perf_counter() - t0
            log(f"{name} done in {timings[name]:.1f} s (load average {loadavg()})")
        disk.probe("end")
    runtime = time.perf_counter() - started
    load_end = loadavg()

    rows = build_rows(outcomes, plan)
    print()
    print(table(rows))
    lines = harness.notes(rows)
    samples = sorted({(r.molen_samples, r.dvc_samples) for r in rows})
    print("\nratio = DVC time / molen time (medians); samples per row (molen, DVC): " + str(samples))
    if lines:
        print("notes:\n" + "\n".join(lines))
    print(
        f"disk probe ({DiskProbe.FILES} small files created, seconds; ~0.1 settled): "
        + ", ".join(f"{p['label']} {p['seconds']:.2f}" for p in disk.samples)
    )
    s3 = outcomes.get("push_pull_s3")
    if s3 and s3.server_cpu:
        print(
            "S3 server (moto, one python process) CPU during each side's whole S3 run: "
            + ", ".join(f"{tool} {cpu:.0f} s of {wall:.0f} s" for tool, (cpu, wall) in s3.server_cpu.items())
        )
    for name, outcome in outcomes.items():
        for tool, error in outcome.errors.items():
            print(f"\n{name}: {tool} FAILED:\n{error}")
    print(
        f"\n{harness.targets_missed(rows)}; runtime {runtime:.0f} s; "
        f"load average at end {' '.join(f'{x:.2f}' for x in load_end) if load_end else '?'}"
    )

    document = {
        "date": date,
        "quick": args.quick,
        "machine": facts,
        "plan": asdict(plan),
        "runtime_seconds": runtime,
        "benchmark_seconds": timings,
        "loadavg_at_end": load_end,
        "disk_probe": disk.samples,
        "rows": [asdict(r) for r in rows],
        "raw": {
            name: {
                "results": outcome.results,
                "errors": outcome.errors,
                "loadavg_before_after": outcome.loadavg,
                "s3_server_cpu_and_wall_seconds": outcome.server_cpu,
            }
            for name, outcome in outcomes.items()
        },
    }
    harness.write_results(args.output, document)
    return 1 if any(outcome.errors for outcome in outcomes.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())

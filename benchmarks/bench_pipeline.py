"""Benchmark molen's pipelines and experiments against DVC's, in the same run.

The same three-stage pipeline (prepare → train → evaluate, small Python scripts reading
params.yaml) is declared for each tool in its own fresh git repository (``molen.yaml`` stages /
``dvc.yaml``), run once, committed, and then measured (wall time of whole commands, medians):

* ``repro`` with nothing to do (pure overhead): ``molen repro`` vs ``dvc repro``;
* one experiment changing one param (``exp run -S train.lr=…``, a new value each time so that
  no run cache answers): the overhead beyond the stages' own time, which is measured by running
  the two affected stage commands directly;
* ``exp show`` with 10 experiments recorded;
* two independent 1-second stages with ``-j 2`` (molen only: DVC runs stages one at a time).

Targets: repro no-op >= 5x faster; exp run overhead >= 3x lower; exp show >= 5x faster; the two
1-second stages under 1.5 s. DVC runs from its own venv (``.bench/dvc``, see ``peers.py``); the
stage scripts run with this python for both tools. Results go to
``benchmarks/results/pipeline.json``; the table to stdout.

    .venv/bin/python benchmarks/bench_pipeline.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import log
from peers import REPO_ROOT, ensure_dvc_venv

PYTHON = sys.executable
MOLEN = str(Path(sys.executable).parent / "molen")

PREPARE = """
import pathlib, random
random.seed(0)
rows = (f"{random.random()},{random.random()}" for _ in range(2000))
pathlib.Path("prepared.csv").write_text("\\n".join(rows))
"""
TRAIN = """
import json, pathlib, yaml
p = yaml.safe_load(open("params.yaml"))["train"]
rows = [tuple(map(float, line.split(","))) for line in pathlib.Path("prepared.csv").read_text().split()]
w = sum(x * y for x, y in rows) * p["lr"] / len(rows)
pathlib.Path("model.json").write_text(json.dumps({"w": w, "depth": p["max_depth"]}))
"""
EVALUATE = """
import json, pathlib
m = json.loads(pathlib.Path("model.json").read_text())
pathlib.Path("metrics.json").write_text(json.dumps({"score": m["w"] * m["depth"]}))
"""
PARAMS = "train:\n  lr: 0.5\n  max_depth: 4\n"


def stages_yaml() -> str:
    py = PYTHON
    return f"""stages:
  prepare:
    cmd: {py} prepare.py
    deps: [prepare.py]
    outs: [prepared.csv]
  train:
    cmd: {py} train.py
    deps: [prepared.csv, train.py]
    params: [train.lr, train.max_depth]
    outs: [model.json]
  evaluate:
    cmd: {py} evaluate.py
    deps: [model.json, evaluate.py]
    metrics: [metrics.json]
"""


def dvc_yaml() -> str:
    return stages_yaml().replace(
        "    metrics: [metrics.json]", "    metrics:\n    - metrics.json:\n        cache: false"
    )


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    sh(cmd, cwd, env)
    return time.perf_counter() - started


def project(root: Path, tool: str, env: dict[str, str], dvc: Path) -> None:
    root.mkdir(parents=True)
    for name, text in (
        ("prepare.py", PREPARE),
        ("train.py", TRAIN),
        ("evaluate.py", EVALUATE),
        ("params.yaml", PARAMS),
    ):
        (root / name).write_text(text)
    sh(["git", "init", "-q"], root)
    sh(["git", "config", "user.email", "bench@example.com"], root)
    sh(["git", "config", "user.name", "bench"], root)
    if tool == "molen":
        sh([MOLEN, "init"], root, env)
        with open(root / "molen.yaml", "a") as config:
            config.write(stages_yaml())
        sh([MOLEN, "repro"], root, env)
    else:
        sh([str(dvc), "init", "-q"], root, env)
        (root / "dvc.yaml").write_text(dvc_yaml())
        sh([str(dvc), "repro", "-q"], root, env)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "pipeline"], root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    dvc = ensure_dvc_venv().parent / "dvc"
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(REPO_ROOT / ".bench" / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    results: dict[str, dict[str, list[float]]] = {"molen": {}, "dvc": {}}
    with tempfile.TemporaryDirectory(prefix="molen-bench-pipeline-", dir=REPO_ROOT / ".bench") as tmp:
        base = Path(tmp)
        for tool in ("molen", "dvc"):
            root = base / tool
            log(f"{tool}: setting up")
            project(root, tool, env, dvc)
            command = [MOLEN] if tool == "molen" else [str(dvc)]
            timed([*command, "repro"], root, env)  # warm
            results[tool]["repro_noop"] = [timed([*command, "repro"], root, env) for _ in range(args.repeat)]
            stage = [
                timed([PYTHON, "train.py"], root, env) + timed([PYTHON, "evaluate.py"], root, env)
                for _ in range(3)
            ]
            results[tool]["stage_time"] = stage
            exp = []
            for index in range(args.repeat):
                exp.append(
                    timed(
                        [
                            *command,
                            "exp",
                            "run",
                            "-S",
                            f"train.lr={0.01 * (index + 1) + (0.001 if tool == 'dvc' else 0)}",
                        ],
                        root,
                        env,
                    )
                )
            results[tool]["exp_run"] = exp
            for index in range(10 - args.repeat):
                sh([*command, "exp", "run", "-S", f"train.lr={0.5 + index}"], root, env)
            results[tool]["exp_show"] = [
                timed([*command, "exp", "show"], root, env) for _ in range(args.repeat)
            ]
            log(f"{tool}: done")
        par = base / "parallel"
        par.mkdir()
        (par / "sleep.py").write_text(
            "import sys, time, pathlib; time.sleep(1); pathlib.Path(sys.argv[1]).write_text('x')"
        )
        sh([MOLEN, "init"], par, env)
        with open(par / "molen.yaml", "a") as config:
            config.write(
                f"stages:\n  a: {{cmd: {PYTHON} sleep.py a.txt, deps: [sleep.py], outs: [a.txt]}}\n"
                f"  b: {{cmd: {PYTHON} sleep.py b.txt, deps: [sleep.py], outs: [b.txt]}}\n"
            )
        results["molen"]["parallel_two_1s"] = [
            timed([MOLEN, "repro", "--force", "-j", "2"], par, env) for _ in range(3)
        ]
    med = {tool: {k: statistics.median(v) for k, v in rows.items()} for tool, rows in results.items()}
    overhead = {tool: med[tool]["exp_run"] - med[tool]["stage_time"] for tool in ("molen", "dvc")}
    rows = [
        ("repro, nothing to do", med["molen"]["repro_noop"], med["dvc"]["repro_noop"], 5),
        ("exp run -S (overhead beyond the stages)", overhead["molen"], overhead["dvc"], 3),
        ("exp run -S (whole command)", med["molen"]["exp_run"], med["dvc"]["exp_run"], None),
        ("exp show, 10 experiments", med["molen"]["exp_show"], med["dvc"]["exp_show"], 5),
    ]
    print(f"{'benchmark':42} | {'molen':>8} | {'DVC':>8} | {'ratio':>6} | target | pass")
    print("-" * 42 + "-+-" + "-" * 8 + "-+-" + "-" * 8 + "-+-" + "-" * 6 + "-+--------+-----")
    table = []
    for label, ours, theirs, target in rows:
        ratio = theirs / ours if ours > 0 else float("inf")
        passed = "-" if target is None else ("PASS" if ratio >= target else "FAIL")
        shown = f">={target}x" if target else "-"
        print(f"{label:42} | {ours:7.3f}s | {theirs:7.3f}s | {ratio:5.1f}x | {shown:>6} | {passed}")
        table.append({"benchmark": label, "molen": ours, "dvc": theirs, "ratio": ratio, "target": target})
    two = med["molen"]["parallel_two_1s"]
    print(
        f"{'two independent 1 s stages, -j 2':42} | {two:7.3f}s | {'-':>8} | {'-':>6} | "
        f"<1.5 s | {'PASS' if two < 1.5 else 'FAIL'}"
    )
    table.append({"benchmark": "two independent 1 s stages, -j 2", "molen": two, "target_seconds": 1.5})
    out = REPO_ROOT / "benchmarks" / "results" / "pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"rows": table, "samples": results, "dvc": sh([str(dvc), "--version"], REPO_ROOT).strip()},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

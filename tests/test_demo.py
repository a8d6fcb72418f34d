"""The main job: `molen demo` walks the whole life cycle in a fresh project, end to end, with a
real server process, and leaves a project whose state tells the same story."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any


def molen_json(root: Path, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "molen", *args], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_main_job_runs_the_whole_life_cycle(tmp_path: Path) -> None:
    root = tmp_path / "clinic"
    # CI=1 as on a CI machine: retrain.sh pulls data only when the project has a remote
    done = subprocess.run(
        [sys.executable, "-m", "molen", "demo", "--keep", str(root)],
        cwd=tmp_path,
        env={**os.environ, "CI": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    for number in range(1, 12):
        assert f"▶ {number}. " in out, number
    assert "registered clinic/1" in out and "PASSED" in out and "Promoted clinic/" in out

    # the alert ran retrain.sh: a new version from the new data, through the gate, to production
    assert "(exit 2: alert)" in out and (root / "reports" / "monitor.html").is_file()
    production = molen_json(root, "models", "show", "clinic@production", "-f", "json")
    versions = molen_json(root, "models", "show", "clinic", "-f", "json")["versions"]
    assert production["version"]["version"] == len(versions) == 4  # repro, two experiments, the retrain
    assert production["gate_verdicts"] and production["gate_verdicts"][-1]["passed"]
    moves = [move["version"] for move in production["alias_history"]]
    assert moves[0] == 1 and moves[-1] == 4 and len(moves) == 3

    # the running server moved to the new version on its own, and it fits the new instrument
    moved = re.search(r"version (\d+) -> (\d+): (\d+)% right", out)
    assert moved and moved.group(2) == "4" and moved.group(1) != "4"
    before = int(re.search(r"scored; (\d+)% right", out).group(1))  # type: ignore[union-attr]
    assert int(moved.group(3)) > before + 20

    # the record: every run finished with its commit; the data has two versions in git
    runs = molen_json(root, "runs", "list", "-f", "json")
    assert len(runs) >= 5 and all(r["status"] == "FINISHED" and r["tags"]["molen.git.commit"] for r in runs)
    history = subprocess.run(
        ["git", "log", "--oneline", "--", "data/raw.csv.molen"], cwd=root, capture_output=True, text=True
    ).stdout
    assert history.count("\n") == 2
    logged = subprocess.run(
        [
            sys.executable,
            "-m",
            "molen",
            "monitor",
            "clinic/3",
            "--window",
            "1h",
            "--all-versions",
            "-f",
            "json",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    report = json.loads(logged.stdout)
    assert report["rows"] > 143 + 2 * 569 and report["performance"]["feedback_rows"] == 143 + 569

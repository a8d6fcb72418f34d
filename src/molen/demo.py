"""molen's main job: the whole life cycle on the embedded default, in a fresh project.

``bash scripts/demo.sh`` (or ``molen demo``) makes a project from the classification template
and walks it from data to a retrained model in production, with the commands a user types:

init (the data versioned) -> repro (clinic/1) -> production -> two experiments -> compare ->
the best through the gate -> serve in the background -> predictions and feedback -> explain ->
drifted traffic from a recalibrated instrument, and its labels -> a new data version -> monitor:
report and alert -> retrain, gate, promote (the alert's command) -> the running server answers
with the new version -> shut down.

Each step says what happened and where to look; the project is left behind to explore.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["run_demo"]

NAME = "clinic"
TARGET = "malignant"
#: The recalibrated instrument: every measurement reads this much higher.
DRIFT = 1.3


def _say(number: int, text: str) -> None:
    from molen.cli.render import console

    console().print(f"\n[bold cyan]▶ {number}. {text}[/]")


def _note(text: str) -> None:
    from molen.cli.render import console

    console().print(f"  [green]{text}[/]")


def _molen(*args: str, allowed: tuple[int, ...] = (0,)) -> int:
    """Run a molen command as the user would type it (in this process) and return its exit code."""
    from molen.cli import main
    from molen.cli.render import console

    console().print(f"[dim]$ molen {' '.join(args)}[/]")
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code not in allowed:
            raise
        return code
    return 0


def _json(*args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "molen", *args], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout)


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _clean(name: str) -> str:
    """A column name as the project's src/features.py cleans it ("mean radius" -> "mean_radius")."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment() -> None:
    """`molen` and `python` of this interpreter first on PATH (the alert's script calls them),
    and a git identity for the project's commits if the machine has none."""
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    os.environ.setdefault("GIT_AUTHOR_NAME", "molen demo")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "demo@molen.invalid")
    os.environ.setdefault("GIT_COMMITTER_NAME", "molen demo")
    os.environ.setdefault("GIT_COMMITTER_EMAIL", "demo@molen.invalid")


def _wait_for_log(rows: int, timeout: float = 30.0) -> None:
    """Until the server's log writer (every ~2 s) has written ``rows`` predictions."""
    from molen.serving.predlog import read_log

    deadline = time.monotonic() + timeout
    while read_log(".molen/log", "predictions", NAME).num_rows < rows:
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not write its prediction log in time")
        time.sleep(0.3)


def _best_experiment_version() -> tuple[int, float]:
    """The registered version with the best test ROC AUC, and that AUC."""
    versions = _json("models", "show", NAME, "-f", "json")["versions"]
    scored = []
    for entry in versions:
        shown = _json("models", "show", f"{NAME}/{entry['version']}", "-f", "json")
        scored.append((float(shown["manifest"]["metrics"].get("roc_auc", 0.0)), int(entry["version"])))
    auc, version = max(scored)
    return version, auc


def _server(port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "molen",
                "serve",
                f"{NAME}@production",
                "--port",
                str(port),
                "--poll",
                "1",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"molen serve did not start; see {log}")
        time.sleep(0.3)


def run_demo(where: Path | None = None) -> Path:
    """Run the whole life cycle in a new project (at ``where``, or in a temporary folder);
    returns the project's root."""
    import pandas as pd

    _environment()
    root = Path(where).resolve() if where else Path(tempfile.mkdtemp(prefix="molen-demo-")) / NAME
    started = time.perf_counter()

    _say(1, f"A ready project from the classification template, in {root}")
    _molen("init", str(root), "--template", "classification")
    os.chdir(root)
    _note(
        "data/raw.csv (569 tumours) is versioned: git holds data/raw.csv.molen, the bytes are in .molen/cache"
    )
    _molen("data", "status")

    _say(2, "The pipeline: prepare -> train -> evaluate, one tracked run; evaluate registers clinic/1")
    _molen("repro")
    _molen("models", "alias", NAME, "1", "production")

    _say(3, "Two experiments: the same pipeline with other params, in working copies")
    _molen("exp", "run", "--grid", "train.C=0.05,20", "-j", "2")
    _say(4, "Compare them: params, metrics, which is best")
    _molen("exp", "show", "--sort", "-metrics.roc_auc")
    _molen("models", "list")

    best, auc = _best_experiment_version()
    _say(5, f"The quality gate: {NAME}/{best} (test ROC AUC {auc:.4f}) against production, then promote")
    if best == 1:  # the first is still the best: gate the runner-up, to see a verdict
        best = 2
    passed = _molen(
        "gate", NAME, "--candidate", str(best), "--against", "production",
        "--data", "data/test.parquet", "--target", TARGET, allowed=(0, 1),
    )  # fmt: skip
    if passed == 0:
        _molen("models", "promote", NAME, str(best), "--to", "production", "--gate",
               "--data", "data/test.parquet", "--target", TARGET)  # fmt: skip
    else:
        _note(f"{NAME}/{best} did not beat production: production stays where it is")
    _molen("lineage", f"{NAME}@production")
    serving = str(_json("models", "show", f"{NAME}@production", "-f", "json")["version"]["version"])

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    _say(6, f"Serve {NAME}@production in the background: {url}/docs")
    server = _server(port, root / "serve.log")
    try:
        test = pd.read_parquet("data/test.parquet")
        features, truth = test.drop(columns=[TARGET]), test[TARGET]
        answer = _post(f"{url}/predict", features.to_dict("records"))
        _note(
            f"{len(answer['predictions'])} predictions by version {answer['version']}; "
            f"the first: {answer['predictions'][0]} (request id {answer['ids'][0]})"
        )
        feedback = [{"request_id": i, "truth": int(t)} for i, t in zip(answer["ids"], truth, strict=True)]
        _post(f"{url}/feedback", feedback)
        _note(f"feedback for all {len(feedback)}: the truth, joined to the answers by request id")
        _wait_for_log(len(features))

        _say(7, "Why did it answer that? The attributions of the first request, from the log")
        _molen("explain", "--request-id", answer["ids"][0], "--top", "5")

        _say(8, f"The lab's instrument is recalibrated: every measurement now reads {DRIFT - 1:.0%} higher")
        raw = pd.read_csv("data/raw.csv")
        drifted = raw.copy()
        measured = [column for column in raw.columns if column != TARGET]
        drifted[measured] = drifted[measured] * DRIFT
        drifted_features = drifted.drop(columns=[TARGET])
        drifted_features.columns = [_clean(name) for name in drifted_features.columns]
        later = _post(f"{url}/predict", drifted_features.to_dict("records"))
        right = sum(int(p) == int(t) for p, t in zip(later["predictions"], drifted[TARGET], strict=True))
        _note(f"{len(drifted)} new tumours scored; {right / len(drifted):.0%} right, the pathologists report")
        _post(
            f"{url}/feedback",
            [{"request_id": i, "truth": int(t)} for i, t in zip(later["ids"], drifted[TARGET], strict=True)],
        )
        _wait_for_log(len(features) + len(drifted))
        _note("their labels join the training data as a new data version")
        pd.concat([raw, drifted]).to_csv("data/raw.csv", index=False)
        _molen("data", "add", "data/raw.csv")
        subprocess.run(
            ["git", "commit", "-qam", "Data: the recalibrated instrument's tumours, labelled"], check=True
        )

        _say(9, "Monitoring: drift, quality, performance from feedback; the alert runs retrain.sh")
        _molen("monitor", f"{NAME}@production", "--window", "1h", allowed=(0, 1, 2))
        report = root / "reports" / "monitor.html"
        report.parent.mkdir(exist_ok=True)
        status = _molen(
            "monitor", f"{NAME}@production", "--window", "1h", "-f", "html", "-o", str(report),
            "--on-alert", "bash retrain.sh", allowed=(0, 1, 2),
        )  # fmt: skip
        _note(f"the report: {report} (exit {status}: {['ok', 'warning', 'alert'][status]})")

        _say(10, "The running server follows the production alias on its own")
        row = drifted_features.iloc[:1].to_dict("records")
        deadline = time.monotonic() + 30
        now = _post(f"{url}/predict", row)["version"]
        while now == serving and time.monotonic() < deadline:
            time.sleep(0.5)
            now = _post(f"{url}/predict", row)["version"]
        final = _post(f"{url}/predict", drifted_features.to_dict("records"))
        right = sum(int(p) == int(t) for p, t in zip(final["predictions"], drifted[TARGET], strict=True))
        share = right / len(drifted)
        _note(f"version {serving} -> {now}: {share:.0%} right on the recalibrated instrument's tumours")
    finally:
        _say(11, "Shut the server down")
        server.terminate()
        server.wait(timeout=30)
        _note(f"its log: {root / 'serve.log'}; the prediction log: {root / '.molen' / 'log'}")

    print(f"\nDone in {time.perf_counter() - started:.0f} s. The project is left in {root}; from there try:")
    for line in (
        "molen runs list                              # every run: params, metrics, data versions, commit",
        "molen lineage clinic@production             # the model -> run -> data version -> commit",
        "molen models show clinic@production --card  # the model card",
        "molen data log data/raw.csv                 # the two data versions and the runs that used them",
        "molen monitor clinic@production --window 1h # the report again, as a table",
        f"open {report}",
    ):
        print(f"  {line}")
    print(f"  (`{sys.executable} -m molen` works too, if `molen` is not on your PATH.)")
    return root


if __name__ == "__main__":
    run_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else None)

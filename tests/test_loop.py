"""The monitoring feedback loop, end to end, the way a user runs it, with real processes.

churn/1 is trained and put at ``production``; ``molen serve churn@production`` runs as its own
process and follows the alias. Steady traffic with its feedback: ``molen monitor`` says ok.
Then the customers change (new ones only, higher charges) and so does what makes them churn
(the price, no longer a short tenure on the basic plan): ``molen monitor --on-alert "bash
retrain.sh"`` alerts, and the retrain script trains churn/2 on the new data and promotes it
through the quality gate. The running server moves to churn/2 on its own, and its answers fit
the new concept.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import molen
from churn import churn_data, churn_pipeline
from molen.project import init_project
from molen.serving.predlog import read_log

pytestmark = pytest.mark.usefixtures("no_importance")

TARGET = "churned"
#: The alert rule the concept change has to fire (besides the drift of the inputs).
ACCURACY_RULE = "accuracy_drop > 0.1"
#: What ``molen monitor --on-alert`` runs: retrain on the new data, promote only through the gate.
RETRAIN_SH = """\
set -e
PYTHON="{python}"  # this test's interpreter: the venv need not be on PATH
"$PYTHON" train.py
version=$("$PYTHON" -m molen models show churn@latest -f json \\
  | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["version"]["version"])')
"$PYTHON" -m molen models promote churn "$version" --to production --gate \\
  --data holdout.parquet --target {target}
echo "$version" > promoted.txt
"""
TRAIN_PY = """\
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import molen

frame = pd.read_parquet("retrain.parquet")
X, y = frame.drop(columns="{target}"), frame["{target}"]
pipeline = Pipeline([
    ("columns", ColumnTransformer([
        ("numbers", StandardScaler(), ["tenure", "charges"]),
        ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
    ])),
    ("model", LogisticRegression()),
]).fit(X, y)
with molen.start_run() as run:
    run.log_metric("accuracy", float(pipeline.score(X, y)))
    logged = run.log_model(pipeline, "churn", reference=X, y_reference=y)
print("retrained", logged.uri)
"""


def drifted_data(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """New customers only (tenure under 6 months), charges 1.5 times higher, the same plans;
    the new concept: they churn when they pay more than 100, whatever their plan."""
    frame, _ = churn_data(rows=rows, seed=seed)
    frame = frame.assign(tenure=frame["tenure"] % 6, charges=frame["charges"] * 1.5)
    return frame, (frame["charges"] > 100).astype(int)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def molen_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "molen", *args], cwd=project, capture_output=True, text=True, timeout=120
    )


def train_first_version(project: Path) -> float:
    """churn/1 on the original customers, at production; returns its training accuracy."""
    frame, target = churn_data(rows=2000)
    model = churn_pipeline(LogisticRegression()).fit(frame, target)
    accuracy = float(model.score(frame, target))
    with molen.start_run() as run:
        run.log_metric("accuracy", accuracy)
        logged = run.log_model(model, "churn", reference=frame, y_reference=target)
    assert logged.uri == "churn/1"
    alias = molen_cli(project, "models", "alias", "churn", "1", "production")
    assert alias.returncode == 0, alias.stdout + alias.stderr
    return accuracy


@contextmanager
def running_server(project: Path, output: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``molen serve churn@production`` as a process, polling the alias twice a second; it is
    stopped with SIGTERM (and waited for) however the block ends."""
    port = free_port()
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "molen",
                "serve",
                "churn@production",
                "--port",
                str(port),
                "--poll",
                "0.5",
            ],
            cwd=project,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(process, url, output)
        yield process, url
    finally:
        stop(process)


def wait_until_healthy(process: subprocess.Popen[bytes], url: str, output: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"molen serve exited ({process.returncode}):\n{output.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"molen serve was not healthy within 30 s:\n{output.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def send(client: httpx.Client, frame: pd.DataFrame, truths: pd.Series | None = None) -> list[dict[str, Any]]:
    """``frame`` to /predict in batches of 100 (and each answer's truths to /feedback)."""
    answers = []
    for start in range(0, len(frame), 100):
        response = client.post("/predict", json=frame.iloc[start : start + 100].to_dict("records"))
        assert response.status_code == 200, response.text
        answer = response.json()
        answers.append(answer)
        if truths is not None:
            feedback = [
                {"request_id": request_id, "truth": int(truth)}
                for request_id, truth in zip(answer["ids"], truths.iloc[start : start + 100], strict=True)
            ]
            taken = client.post("/feedback", json=feedback)
            assert taken.status_code == 200 and taken.json() == {"accepted": len(feedback)}, taken.text
    return answers


def predictions(answers: list[dict[str, Any]]) -> list[int]:
    return [int(p) for answer in answers for p in answer["predictions"]]


def accuracy(answers: list[dict[str, Any]], truths: pd.Series) -> float:
    return sum(p == t for p, t in zip(predictions(answers), truths, strict=True)) / len(truths)


def logged_rows(project: Path, kind: str) -> int:
    return read_log(str(project / ".molen" / "log"), kind, "churn").num_rows


def wait_for_log(project: Path, rows: int, feedback: int) -> None:
    """Until the server's writer (every ~2 s) has put ``rows`` predictions and ``feedback``
    truths into the log."""
    deadline = time.monotonic() + 20
    while (logged_rows(project, "predictions"), logged_rows(project, "feedback")) != (rows, feedback):
        assert time.monotonic() < deadline, "the server did not write its prediction log within 20 s"
        time.sleep(0.2)


def wait_for_version(client: httpx.Client, row: dict[str, Any], version: str) -> list[str]:
    """Ask /predict about ``row`` until ``version`` answers; the versions that answered."""
    deadline = time.monotonic() + 15
    answered = [client.post("/predict", json=[row]).json()["version"]]
    while answered[-1] != version:
        assert time.monotonic() < deadline, f"still serving version {answered[-1]} after 15 s"
        time.sleep(0.2)
        answered.append(client.post("/predict", json=[row]).json()["version"])
    return answered


def write_retrain_files(project: Path) -> None:
    """The retrain script, its training data and the holdout the gate scores: the new customers
    under the new concept."""
    for name, seed, rows in (("retrain.parquet", 10, 2000), ("holdout.parquet", 11, 1000)):
        frame, target = drifted_data(rows, seed)
        frame.assign(**{TARGET: target}).to_parquet(project / name)
    (project / "train.py").write_text(TRAIN_PY.format(target=TARGET))
    (project / "retrain.sh").write_text(RETRAIN_SH.format(python=sys.executable, target=TARGET))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    init_project(root, experiment="loop")
    with open(root / "molen.yaml", "a") as config:
        config.write(f"monitor:\n  alerts:\n    - when: {ACCURACY_RULE}\n")
    monkeypatch.chdir(root)
    return root


def test_drift_alert_retrains_promotes_and_the_server_follows(project: Path, tmp_path: Path) -> None:
    trained_accuracy = train_first_version(project)
    write_retrain_files(project)
    steady, steady_truth = churn_data(rows=1500, seed=5)  # > 1000 rows: drift by distance
    drifted, drifted_truth = drifted_data(2000, seed=9)
    fresh, fresh_truth = drifted_data(500, seed=12)
    server_output = tmp_path / "serve.log"

    with (
        running_server(project, server_output) as (server, url),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        health = client.get("/health").json()
        assert (health["version"], health["alias"]) == ("1", "production")

        # 1. steady traffic: all is well
        answers = send(client, steady, steady_truth)
        assert {answer["version"] for answer in answers} == {"1"}
        assert accuracy(answers, steady_truth) > 0.9
        wait_for_log(project, 1500, 1500)
        done = molen_cli(project, "monitor", "churn@production", "--window", "1h", "--format", "json")
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["status"] == "ok" and report["alerts"] == [] and report["rows"] == 1500
        assert not report["data_drift"]["dataset_drift"] and report["performance"]["coverage"] == 1.0
        assert report["performance"]["metrics"]["accuracy"] == pytest.approx(trained_accuracy, abs=0.05)

        # 2. the customers and the concept change: the old model is no better than a coin
        answers = send(client, drifted, drifted_truth)
        old_accuracy = accuracy(answers, drifted_truth)
        assert old_accuracy < 0.7
        wait_for_log(project, 3500, 3500)
        done = molen_cli(
            project,
            "monitor",
            "churn@production",
            "--window",
            "1h",
            "--format",
            "json",
            "-o",
            "report.json",
            "--on-alert",
            "bash retrain.sh",
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert "retrained churn/2" in done.stderr and "ALERT: wrote report.json" in done.stdout
        report = json.loads((project / "report.json").read_text())
        assert report["status"] == "alert" and report["on_alert_exit_code"] == 0, done.stdout + done.stderr
        assert report["rows"] == 3500 and report["version"] == 1
        assert report["data_drift"]["dataset_drift"]
        assert {c["column"] for c in report["data_drift"]["columns"] if c["drifted"]} >= {"tenure", "charges"}
        assert [alert["rule"] for alert in report["alerts"]] == [ACCURACY_RULE]
        assert report["performance"]["metrics"]["accuracy"] < trained_accuracy - 0.1

        # 3. the retrain script registered churn/2 and the gate let it through
        assert (project / "promoted.txt").read_text().strip() == "2"
        shown = molen_cli(project, "models", "show", "churn@production", "-f", "json")
        assert shown.returncode == 0, shown.stderr
        production = json.loads(shown.stdout)
        assert production["version"]["version"] == 2 and production["manifest"]["metrics"]["accuracy"] > 0.95
        assert [(move["previous"], move["version"]) for move in production["alias_history"]] == [
            (None, 1),
            (1, 2),
        ]
        (gate,) = production["gate_verdicts"]
        assert gate["passed"] and gate["verdict"]["mode"] == "holdout"
        assert gate["verdict"]["against"] == {"alias": "production", "version": 1}
        auc = gate["verdict"]["metrics"]
        assert auc["candidate"]["auc"] > 0.95 and auc["champion"]["auc"] < 0.7

        # 4. the running server follows the alias on its own, and fits the new concept
        probes = wait_for_version(client, fresh.iloc[0].to_dict(), "2")
        assert client.get("/health").json()["version"] == "2"
        answers = send(client, fresh)
        assert {answer["version"] for answer in answers} == {"2"}
        new_accuracy = accuracy(answers, fresh_truth)
        assert new_accuracy > 0.9 and new_accuracy > old_accuracy + 0.3

        # 5. monitoring production now judges version 2 on its own rows, against its own reference
        wait_for_log(project, 3500 + len(probes) + len(fresh), 3500)
        done = molen_cli(project, "monitor", "churn@production", "--window", "1h", "--format", "json")
        report = json.loads(done.stdout)
        assert report["version"] == 2 and report["rows"] == 1 + len(fresh), done.stderr
        assert not report["data_drift"]["dataset_drift"] and report["alerts"] == []
        every = molen_cli(
            project, "monitor", "churn@production", "--window", "1h", "-f", "json", "--all-versions"
        )
        assert json.loads(every.stdout)["rows"] == 3500 + len(probes) + len(fresh), every.stderr

    # a clean shutdown (uvicorn finishes, then re-raises SIGTERM), and every answer reached the log
    assert server.returncode == -signal.SIGTERM, server_output.read_text()
    assert "churn@production moved: version 1 → 2" in server_output.read_text()
    logged = read_log(str(project / ".molen" / "log"), "predictions", "churn").to_pandas()
    assert len(logged) == 3500 + len(probes) + len(fresh)
    assert (logged["version"] == "2").sum() == 1 + len(fresh)

"""molen monitor: a window of the prediction log against the model's reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

import molen
from churn import churn_data, churn_pipeline
from molen.monitor.html import report_html
from molen.monitor.report import monitor
from molen.project import init_project
from molen.serving.predlog import PredictionBatch, PredictionLog
from molen.serving.run import ServeOptions, build_app
from molen.workspace import open_workspace

pytestmark = pytest.mark.usefixtures("no_importance")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "proj"
    init_project(root, experiment="monitor")
    monkeypatch.chdir(root)
    frame, target = churn_data(rows=2000)
    with molen.start_run() as run:
        run.log_metric("accuracy", 0.95)
        run.log_model(
            churn_pipeline(LogisticRegression()).fit(frame, target),
            "churn",
            reference=frame,
            y_reference=target,
        )
    yield root


def serve(project: Path, rows: list[dict[str, Any]], truths: list[int] | None = None) -> None:
    options = ServeOptions(
        uri="churn/1", project=str(project), log_root=str(project / ".molen" / "log"), poll_interval=0
    )
    with TestClient(build_app(options)) as client:
        for start in range(0, len(rows), 50):
            answer = client.post("/predict", json=rows[start : start + 50]).json()
            if truths is not None:
                feedback = [
                    {"request_id": i, "truth": t}
                    for i, t in zip(answer["ids"], truths[start : start + 50], strict=True)
                ]
                client.post("/feedback", json=feedback)


def molen_monitor(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``molen monitor churn/1 --window 1h ARGS`` in the project."""
    return subprocess.run(
        [sys.executable, "-m", "molen", "monitor", "churn/1", "--window", "1h", *args],
        cwd=project,
        capture_output=True,
        text=True,
    )


def monitor_cli(project: Path) -> subprocess.CompletedProcess[str]:
    return molen_monitor(project, "--format", "json")


def test_steady_traffic_is_ok_and_drifted_traffic_alerts(project: Path) -> None:
    frame, target = churn_data(rows=1500, seed=5)
    serve(project, frame.to_dict("records"), target.tolist())
    steady = monitor_cli(project)
    assert steady.returncode == 0, steady.stdout + steady.stderr
    report = json.loads(steady.stdout)
    assert report["status"] == "ok" and report["rows"] == 1500
    assert report["performance"]["coverage"] == 1.0 and report["performance"]["metrics"]["accuracy"] > 0.9
    assert report["volume"]["versions"] == ["1"] and report["volume"]["latency_ms_p50"] > 0
    assert report["performance"]["training_metrics"] == {"accuracy": 0.95}

    rng = np.random.default_rng(9)
    drifted = frame.assign(
        tenure=rng.integers(0, 15, len(frame)),  # new customers only
        charges=frame["charges"] + 200,  # far above anything seen in training
        plan=rng.choice(["basic", "gold"], len(frame)),  # a plan the model never saw: refused, not logged
    )
    refused = drifted.assign(plan="basic")
    serve(project, refused.to_dict("records"))
    alert = monitor_cli(project)
    assert alert.returncode == 2, alert.stdout + alert.stderr
    report = json.loads(alert.stdout)
    assert report["status"] == "alert" and report["data_drift"]["dataset_drift"]
    drifted_columns = {c["column"] for c in report["data_drift"]["columns"] if c["drifted"]}
    assert {"tenure", "charges", "plan"} <= drifted_columns
    assert any(
        check["check"] == "out of training range" and check["column"] == "charges"
        for check in report["quality"]
    )
    assert report["prediction_drift"]["dataset_drift"]
    table = molen_monitor(project)
    assert table.returncode == 2 and "ALERT" in table.stdout and "dataset drift: yes" in table.stdout
    page = molen_monitor(project, "-f", "html", "-o", "report.html")
    assert page.returncode == 2 and "ALERT: wrote report.html" in page.stdout
    implied = subprocess.run(  # -o with no --format: the file name says which
        [sys.executable, "-m", "molen", "monitor", "churn/1", "--window", "1h", "-o", "implied.json"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert implied.returncode == 2 and json.loads((project / "implied.json").read_text())["status"] == "alert"
    text = (project / "report.html").read_text()
    assert text.startswith("<!doctype html>")
    assert all(f'<img alt="{name}"' in text for name in ("prediction", "tenure", "charges", "plan"))
    assert "<script" not in text and "http" not in text.split("<body>")[0]
    assert "dataset drift <b>yes</b>" in text


def test_an_empty_window_is_explained(project: Path) -> None:
    empty = monitor_cli(project)
    assert empty.returncode == 3 and "no predictions of churn version 1 logged" in empty.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "molen", "monitor", "churn/1", "--window", "soon"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--window 'soon'" in bad.stderr
    limit = subprocess.run(
        [sys.executable, "-m", "molen", "monitor", "churn/1"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "MOLEN_MONITOR_MEMORY_LIMIT": "lots"},
    )
    assert limit.returncode == 2 and "monitor.memory_limit" in limit.stderr and "512MB" in limit.stderr


def test_alert_rules_webhook_with_retries_and_on_alert(project: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict[str, Any]] = []
    calls = {"n": 0}

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            calls["n"] += 1
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if calls["n"] == 1:  # the first delivery fails: molen must retry
                self.send_response(503)
            else:
                received.append(json.loads(body))
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with open(project / "molen.yaml", "a") as config:
            config.write(
                "monitor:\n"
                "  alerts:\n"
                "    - when: accuracy_drop > 0.5\n"  # cannot happen here
                "    - when: rows > 100\n"  # fires: 300 rows
                f"  webhook: http://127.0.0.1:{server.server_address[1]}/hook\n"
            )
        frame, target = churn_data(rows=300, seed=5)
        serve(project, frame.to_dict("records"), target.tolist())
        done = molen_monitor(project, "-f", "json", "--on-alert", "echo retrain > on-alert.txt")
    finally:
        server.shutdown()
    assert done.returncode == 2, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["alerts"] == [{"rule": "rows > 100", "value": 300.0}]
    assert (project / "on-alert.txt").read_text().strip() == "retrain"
    assert calls["n"] == 2 and received[0]["alerts"] == report["alerts"] and received[0]["model"] == "churn"


def test_bad_alert_rules_are_refused(project: Path) -> None:
    with open(project / "molen.yaml", "a") as config:
        config.write("monitor:\n  alerts:\n    - when: drift is high\n")
    frame, _ = churn_data(rows=100, seed=5)
    serve(project, frame.to_dict("records"))
    done = monitor_cli(project)
    assert done.returncode == 2 and "monitor.alerts[1] needs 'when: QUANTITY > NUMBER'" in done.stderr


def write_day(
    root: Path, day: datetime, frame: Any, *, truths: Any = None, tag: str = "", drop: str | None = None
) -> None:
    """Log ``frame``'s predictions by churn/1 as if served on ``day`` (and their truths), the
    input column ``drop`` left out of the log."""
    predictor = molen.load_model("churn/1")
    log = PredictionLog(str(root), flush_interval=0.05)
    ids = [f"{tag}{day:%m%d}-{i}" for i in range(len(frame))]
    for start in range(0, len(frame), 100):
        part = frame.iloc[start : start + 100]
        logged = part.drop(columns=[drop]) if drop else part
        batch = PredictionBatch(
            list(logged.columns),
            logged,
            ids[start : start + 100],
            "1",
            "champion",
            2.0,
            predictor.predict(part),
            predictor.predict_proba(part),
        )
        batch.timestamp = int((day + timedelta(minutes=start // 100)).timestamp() * 1_000_000)
        log.append("predictions", "churn", batch, len(part))
    if truths is not None:
        rows = [
            {"request_id": i, "timestamp": day, "truth": str(t)} for i, t in zip(ids, truths, strict=True)
        ]
        log.append("feedback", "churn", rows, len(rows))
    log.close()


def test_drift_and_performance_over_time_with_estimates(project: Path) -> None:
    root = project / ".molen" / "log"
    first = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    days = [first + timedelta(days=n) for n in range(3)]
    for number, day in enumerate(days[:2]):
        frame, target = churn_data(rows=1500, seed=20 + number)  # > 1000 rows a day: distances
        write_day(root, day, frame, truths=target)
    frame, _ = churn_data(rows=1500, seed=30)
    rng = np.random.default_rng(3)
    write_day(root, days[2], frame.assign(tenure=rng.integers(0, 6, 1500), charges=frame["charges"] * 0.6))
    workspace = open_workspace(project)
    report = monitor(
        "churn/1", log_root=str(root), workspace=workspace, since=days[0], until=days[2] + timedelta(days=1)
    )
    timeline = report["timeline"]
    assert [entry["start"][:10] for entry in timeline] == [f"{day:%Y-%m-%d}" for day in days]
    assert [entry["dataset_drift"] for entry in timeline] == [False, False, True]
    assert [entry["coverage"] for entry in timeline] == [1.0, 1.0, 0.0]
    assert timeline[0]["metrics"]["accuracy"] > 0.9 and not timeline[2]["metrics"]
    assert all(0.5 < entry["estimated"]["accuracy"] <= 1.0 for entry in timeline)
    check = report["performance"]["estimate_check"]
    assert check["buckets"] == 2 and check["mean_absolute_error"]["accuracy"] < 0.05
    assert report["performance"]["coverage"] == pytest.approx(2 / 3)
    assert {"accuracy", "precision", "recall", "f1", "roc_auc"} <= set(report["performance"]["metrics"])

    first_day = monitor("churn/1", log_root=str(root), workspace=workspace, since=days[0], until=days[1])
    assert len(first_day["timeline"]) == 1  # hourly under two days; the day's writes took 15 minutes
    assert first_day["rows"] == 1500 and not first_day["data_drift"]["dataset_drift"]

    steady = monitor(
        "churn/1",
        log_root=str(root),
        workspace=workspace,
        since=days[1],
        until=days[2],
        reference_since=days[0],
    )
    assert steady["reference"]["source"] == "log" and not steady["data_drift"]["dataset_drift"]
    drifted = monitor(
        "churn/1",
        log_root=str(root),
        workspace=workspace,
        since=days[2],
        until=days[2] + timedelta(days=1),
        reference_since=days[0],
        reference_until=days[2],
    )
    assert drifted["data_drift"]["dataset_drift"] and drifted["status"] == "alert"

    page = report_html(report)
    assert "Over time" in page and '<img alt="performance over time"' in page
    assert '<img alt="share of drifted features"' in page

    table = subprocess.run(
        [
            sys.executable,
            "-m",
            "molen",
            "monitor",
            "churn/1",
            "--since",
            f"{days[0]:%Y-%m-%d}",
            "--until",
            f"{days[2] + timedelta(days=1):%Y-%m-%d}",
        ],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert table.returncode == 2 and "over time" in table.stdout and "est. accuracy" in table.stdout, (
        table.stderr
    )
    bad = subprocess.run(
        [sys.executable, "-m", "molen", "monitor", "churn/1", "--since", "last tuesday"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--since 'last tuesday'" in bad.stderr


def test_evidently_preset_and_thresholds_from_molen_yaml(project: Path) -> None:
    frame, _ = churn_data(rows=1200, seed=7)
    serve(project, frame.assign(charges=frame["charges"] + 3).to_dict("records"))  # 0.15 standard deviations
    ours = json.loads(monitor_cli(project).stdout)
    assert ours["data_drift"]["preset"] == "molen" and ours["status"] == "ok"
    config = project / "molen.yaml"
    config.write_text(config.read_text() + "monitor:\n  drift:\n    preset: evidently\n")
    theirs = json.loads(monitor_cli(project).stdout)
    by_name = {c["column"]: c for c in theirs["data_drift"]["columns"]}
    assert theirs["data_drift"]["preset"] == "evidently" and by_name["charges"]["method"] == "wasserstein"
    assert by_name["charges"]["drifted"]  # Evidently's table flags so small a shift; molen's does not
    config.write_text(
        config.read_text().replace(
            "preset: evidently", "preset: evidently\n    thresholds: {wasserstein: 0.5}"
        )
    )
    lenient = json.loads(monitor_cli(project).stdout)
    assert not {c["column"]: c for c in lenient["data_drift"]["columns"]}["charges"]["drifted"]
    config.write_text(config.read_text().replace("wasserstein: 0.5", "psi: 0.5"))
    refused = monitor_cli(project)
    assert refused.returncode == 2 and "'psi' is not a method of preset evidently" in refused.stderr


def gauges(client: TestClient) -> dict[str, float]:
    found = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(("molen_feature_drifted", "molen_drifted_share", "molen_drift_rows ")):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_the_server_exports_drift_gauges_per_period(project: Path) -> None:
    options = ServeOptions(
        uri="churn/1", project=str(project), log_root=None, poll_interval=0, drift_every=0.2
    )
    frame, _ = churn_data(rows=1500, seed=5)
    with TestClient(build_app(options)) as client:
        client.post("/predict", json=frame.to_dict("records"))
        deadline = time.monotonic() + 10
        while gauges(client).get("molen_drift_rows", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the watch thread publishes every 0.2 s
        steady = gauges(client)
        assert steady["molen_drift_rows"] == 1500 and steady["molen_drifted_share"] == 0.0
        assert steady['molen_feature_drifted{feature="tenure"}'] == 0.0
        watch = client.app.state.server.drift  # type: ignore[attr-defined]
        watch.interval = 3600  # no more periods on their own: the test publishes the next one
        drifted = frame.assign(tenure=frame["tenure"] // 6, charges=frame["charges"] * 0.7)
        client.post("/predict", json=drifted.to_dict("records"))
        watch.publish()
        found = gauges(client)
        assert found['molen_feature_drifted{feature="tenure"}'] == 1.0
        assert found['molen_feature_drifted{feature="charges"}'] == 1.0
        assert found['molen_feature_drifted{feature="plan"}'] == 0.0
        assert found["molen_drifted_share"] == pytest.approx(2 / 3)
        assert 'molen_feature_drift{feature="tenure",method="jensenshannon"}' in client.get("/metrics").text
        watch.publish()  # a period without traffic: rows 0, the last verdicts kept
        quiet = gauges(client)
        assert quiet["molen_drift_rows"] == 0 and quiet["molen_drifted_share"] == pytest.approx(2 / 3)


def test_a_prediction_log_in_s3(
    project: Path, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The team setup: the server logs to an S3-compatible store (the objects' endpoint), and
    monitor reads it there through the same client."""
    monkeypatch.setenv("MOLEN_OBJECTS_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("MOLEN_SERVING_PREDICTION_LOG", f"s3://{s3_bucket}/log")
    options = ServeOptions(
        uri="churn/1", project=str(project), log_root=f"s3://{s3_bucket}/log", poll_interval=0
    )
    frame, target = churn_data(rows=1200, seed=5)
    with TestClient(build_app(options)) as client:
        answer = client.post("/predict", json=frame.to_dict("records")).json()
        feedback = [{"request_id": i, "truth": int(t)} for i, t in zip(answer["ids"], target, strict=True)]
        assert client.post("/feedback", json=feedback).status_code == 200
    assert not (project / ".molen" / "log").exists()
    done = monitor_cli(project)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["rows"] == 1200 and report["performance"]["coverage"] == 1.0
    assert report["performance"]["metrics"]["accuracy"] > 0.9


def test_an_input_missing_from_the_log_is_a_schema_problem(project: Path) -> None:
    root = project / ".molen" / "log"
    day = datetime.now(timezone.utc) - timedelta(hours=2)
    frame, _ = churn_data(rows=500, seed=8)
    write_day(root, day, frame, drop="plan")
    report = monitor(
        "churn/1", log_root=str(root), workspace=open_workspace(project), window=timedelta(days=1)
    )
    assert {
        "column": "plan",
        "check": "schema",
        "share": 1.0,
        "detail": "not in the logged inputs",
    } in report["quality"]
    assert report["status"] == "warning" and {c["column"] for c in report["data_drift"]["columns"]} == {
        "tenure",
        "charges",
    }


def test_champion_and_shadow_side_by_side(project: Path) -> None:
    """With a shadow, the report compares the versions that answered: rows, latency, accuracy
    on the feedback, and how often the shadow agreed with the champion on the same request."""
    from sklearn.tree import DecisionTreeClassifier

    frame, target = churn_data(rows=2000)
    with molen.start_run() as run:
        run.log_model(
            churn_pipeline(DecisionTreeClassifier(max_depth=2)).fit(frame, target),
            "churn",
            reference=frame,
            y_reference=target,
        )
    rows, truths = churn_data(rows=300, seed=9)
    options = ServeOptions(
        uri="churn/1",
        shadow="churn/2",
        project=str(project),
        log_root=str(project / ".molen" / "log"),
        poll_interval=0,
    )
    records = rows.to_dict("records")
    with TestClient(build_app(options)) as client:
        for start in range(0, len(records), 50):
            answer = client.post("/predict", json=records[start : start + 50]).json()
            feedback = [
                {"request_id": i, "truth": int(t)}
                for i, t in zip(answer["ids"], truths[start : start + 50], strict=True)
            ]
            client.post("/feedback", json=feedback)
    report = monitor(
        "churn/1",
        log_root=str(project / ".molen" / "log"),
        workspace=open_workspace(),
        window=timedelta(hours=1),
    )
    versions = {(v["version"], v["role"]): v for v in report["versions"]}
    assert set(versions) == {("1", "champion"), ("2", "shadow")}
    champion, shadow = versions["1", "champion"], versions["2", "shadow"]
    assert champion["rows"] == shadow["rows"] == 300
    assert champion["with_feedback"] == shadow["with_feedback"] == 300
    # the shares are those of the rows themselves
    assert champion["accuracy"] is not None and 0.5 < champion["accuracy"] <= 1
    assert shadow["compared"] == 300 and champion["compared"] == 0 and champion["agreement"] is None
    assert 0 < shadow["agreement"] <= 1
    assert report["volume"]["rows"] == 300  # the shadow's rows were not answered: not in the volume
    page = report_html(report)
    assert "Champion and challengers" in page and "shadow" in page

"""molen serve: the three protocols, bad input, the prediction log and feedback, metrics, auth,
following an alias, champion and challenger, and the real server in a process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

import molen
from churn import churn_data as churn
from churn import churn_pipeline
from molen.project import init_project
from molen.registry.service import set_alias
from molen.serving.predlog import PredictionLog, read_log
from molen.serving.run import ServeOptions, build_app

pytestmark = pytest.mark.usefixtures("no_importance")

ROW = {"tenure": 3, "charges": 80.5, "plan": "basic"}


def log_churn(c: float = 1.0) -> int:
    frame, target = churn(rows=300)
    pipeline = churn_pipeline(LogisticRegression(C=c)).fit(frame, target)
    with molen.start_run() as run:
        return int(run.log_model(pipeline, "churn", reference=frame).version.version)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "proj"
    init_project(root, experiment="serve")
    monkeypatch.chdir(root)
    log_churn(1.0)
    log_churn(0.01)
    set_alias("churn", 1, "production")
    set_alias("churn", 2, "staging")
    yield root


def options(project: Path, **changes: Any) -> ServeOptions:
    base = ServeOptions(
        uri="churn@production", project=str(project), log_root=str(project / "log"), poll_interval=0
    )
    return base._replace(**changes)


@pytest.fixture
def client(project: Path) -> Iterator[TestClient]:
    with TestClient(build_app(options(project))) as test_client:
        yield test_client


# -- the three protocols -----------------------------------------------------------------------------


def test_predict_rows_records_and_columns(client: TestClient) -> None:
    expected = molen.load_model("churn/1").predict([ROW, {**ROW, "tenure": 50}]).tolist()
    for body in (
        [ROW, {**ROW, "tenure": 50}],
        {"records": [ROW, {**ROW, "tenure": 50}]},
        {"columns": {"tenure": [3, 50], "charges": [80.5, 80.5], "plan": ["basic", "basic"]}},
    ):
        response = client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["predictions"] == expected
        assert doc["model"] == "churn" and doc["version"] == "1"
        assert len(doc["ids"]) == 2 and doc["ids"][0].startswith(doc["request_id"])
        assert doc["classes"] == [0, 1] and len(doc["probabilities"][0]) == 2
        assert response.headers["x-molen-model-version"] == "1"
    named = client.post("/predict", json={"records": [ROW], "ids": ["order-7"]}).json()
    assert named["ids"] == ["order-7"]


def test_mlflow_invocations_formats(client: TestClient) -> None:
    expected = molen.load_model("churn/1").predict([ROW]).tolist()
    for body in (
        {"dataframe_split": {"columns": ["tenure", "charges", "plan"], "data": [[3, 80.5, "basic"]]}},
        {"dataframe_records": [ROW]},
        {"instances": [ROW]},
        {"instances": [[3, 80.5, "basic"]]},
        {"inputs": {"tenure": [3], "charges": [80.5], "plan": ["basic"]}},
    ):
        response = client.post("/invocations", json=body)
        assert response.status_code == 200, (body, response.text)
        assert response.json() == {"predictions": expected}
    csv = client.post(
        "/invocations", content=b"tenure,charges,plan\n3,80.5,basic\n", headers={"content-type": "text/csv"}
    )
    assert csv.json() == {"predictions": expected}
    two = client.post("/invocations", json={"dataframe_records": [ROW], "instances": [ROW]})
    assert two.status_code == 400 and two.json()["error_code"] == "BAD_REQUEST"
    assert "exactly one" in two.json()["message"]
    assert (
        client.post("/invocations", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    )


def test_v2_inference_protocol(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/churn/ready").json() == {"name": "churn", "ready": True}
    assert client.get("/v2/models/nope/ready").status_code == 404
    meta = client.get("/v2/models/churn").json()
    assert [i["name"] for i in meta["inputs"]] == ["tenure", "charges", "plan"]
    assert meta["outputs"][0] == {"name": "predict", "datatype": "INT64", "shape": [-1, 1]}
    named = {
        "id": "req-42",
        "inputs": [
            {"name": "tenure", "shape": [2], "datatype": "INT64", "data": [3, 50]},
            {"name": "charges", "shape": [2], "datatype": "FP64", "data": [80.5, 80.5]},
            {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["basic", "basic"]},
        ],
    }
    doc = client.post("/v2/models/churn/infer", json=named).json()
    assert doc["id"] == "req-42" and doc["model_name"] == "churn" and doc["model_version"] == "1"
    assert [o["name"] for o in doc["outputs"]] == ["predict", "predict_proba"]
    assert doc["outputs"][0]["shape"] == [2, 1] and doc["outputs"][1]["shape"] == [2, 2]
    expected = molen.load_model("churn/1").predict([ROW, {**ROW, "tenure": 50}]).tolist()
    assert doc["outputs"][0]["data"] == expected
    only = {**named, "outputs": [{"name": "predict_proba"}]}
    assert [o["name"] for o in client.post("/v2/models/churn/infer", json=only).json()["outputs"]] == [
        "predict_proba"
    ]
    tensor = {
        "inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "BYTES", "data": [[3, 80.5, "basic"]]}]
    }
    assert client.post("/v2/models/churn/infer", json=tensor).json()["outputs"][0]["data"] == expected[:1]
    versioned = client.post("/v2/models/churn/versions/1/infer", json=named)
    assert versioned.status_code == 200
    wrong = client.post("/v2/models/churn/versions/9/infer", json=named)
    assert wrong.status_code == 404 and "version 9 not found" in wrong.json()["error"]


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body", "status", "text"),
    [
        ("/predict", b"{bad", 400, "not valid JSON"),
        ("/predict", b"", 400, "empty"),
        ("/predict", b'{"rows": []}', 400, "send a list of rows"),
        ("/predict", b'[{"tenure": 3, "plan": "basic"}]', 422, "missing column 'charges'"),
        ("/predict", b'[{"tenure": "x", "charges": 1, "plan": "basic"}]', 422, "expected a number"),
        ("/predict", b'[{"tenure": 3, "charges": 1, "plan": "gold"}]', 422, "unseen category 'gold'"),
        ("/predict", b'{"records": [{"tenure": 3}], "ids": [1, 2]}', 400, "ids must be a list of 1"),
        ("/v2/models/churn/infer", b'{"inputs": [{"name": "tenure"}]}', 400, "needs a shape"),
        (
            "/v2/models/churn/infer",
            b'{"inputs": [{"name": "t", "shape": [2], "datatype": "FP64", "data": [1]}]}',
            400,
            "holds 1 values",
        ),
        ("/invocations", b"[1, 2]", 400, "exactly one"),
    ],
)
def test_bad_input_is_a_4xx_with_one_line(
    client: TestClient, route: str, body: bytes, status: int, text: str
) -> None:
    response = client.post(route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    message = response.json().get("error") or response.json().get("message")
    assert text in message and "\n" not in message


def test_oversized_body_is_413(project: Path) -> None:
    with TestClient(build_app(options(project, max_body=1000))) as client:
        response = client.post("/predict", json=[ROW] * 100)
        assert response.status_code == 413 and "limit" in response.json()["error"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
row_values = st.fixed_dictionaries(
    {},
    optional={
        "tenure": json_values,
        "charges": json_values,
        "plan": json_values,
        "extra": json_values,
    },
)


@given(
    route=st.sampled_from(["/predict", "/invocations", "/v2/models/churn/infer", "/feedback"]),
    body=st.one_of(
        json_values,
        st.lists(row_values, max_size=3),
        st.fixed_dictionaries({"records": st.lists(row_values, max_size=3)}),
        st.fixed_dictionaries({"dataframe_records": st.lists(row_values, max_size=3)}),
        st.fixed_dictionaries(
            {"columns": st.dictionaries(st.sampled_from(["tenure", "charges", "plan"]), json_values)}
        ),
        st.fixed_dictionaries(
            {
                "inputs": st.lists(
                    st.fixed_dictionaries(
                        {
                            "name": st.sampled_from(["tenure", "plan", "x"]),
                            "shape": json_values,
                            "datatype": st.sampled_from(["FP64", "BYTES", "INT64", "X"]),
                            "data": json_values,
                        }
                    ),
                    max_size=3,
                )
            }
        ),
    ),
)
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_fuzzed_bodies_never_get_a_5xx(client: TestClient, route: str, body: Any) -> None:
    response = client.post(route, json=body)
    assert response.status_code < 500, (route, body, response.text)


# -- the prediction log, feedback, metrics ----------------------------------------------------------------


def test_every_answered_row_is_logged_and_feedback_joins(project: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    with TestClient(build_app(options(project))) as client:
        answered = []
        for tenure in range(5):
            answered += client.post("/predict", json=[{**ROW, "tenure": tenure}, ROW]).json()["ids"]
        client.post("/predict", json=[{**ROW, "plan": "gold"}])  # refused: not logged
        accepted = client.post(
            "/feedback",
            json=[{"request_id": answered[0], "truth": 1}, {"request_id": answered[1], "truth": 0}],
        )
        assert accepted.json() == {"accepted": 2}
        assert client.post("/feedback", json={"request_id": answered[2], "truth": 1}).json() == {
            "accepted": 1
        }
        assert client.post("/feedback", json={"truth": 1}).status_code == 400
    table = read_log(str(project / "log"), "predictions", "churn").to_pandas()
    assert sorted(table["request_id"]) == sorted(answered)
    assert set(table["version"]) == {"1"} and set(table["role"]) == {"champion"}
    assert table["inputs"].iloc[0].keys() == {"tenure", "charges", "plan"}
    logged = f"read_parquet('{project}/log/%s/**/*.parquet', hive_partitioning = true)"
    joined = duckdb.sql(
        f"""
        select p.request_id, p.prediction, f.truth
        from {logged % "predictions"} p join {logged % "feedback"} f using (request_id)
        where p.model = 'churn'
        """
    ).fetchall()
    assert len(joined) == 3
    import polars as pl

    assert pl.read_parquet(f"{project}/log/predictions/**/*.parquet", hive_partitioning=True).height == 10


def test_metrics_in_prometheus_format(client: TestClient) -> None:
    client.post("/predict", json=[ROW, ROW])
    client.post("/predict", json=[{**ROW, "plan": "gold"}])
    text = client.get("/metrics").text
    assert 'molen_requests_total{route="/predict",status="200"} 1.0' in text
    assert 'molen_requests_total{route="/predict",status="422"} 1.0' in text
    assert 'molen_rows_predicted_total{role="champion",version="1"} 2.0' in text
    assert "molen_request_seconds_bucket" in text and "molen_predictions_by_class_total" in text
    assert 'molen_model_info{alias="production",model="churn",role="champion",version="1"} 1.0' in text
    assert "molen_log_rows_dropped 0.0" in text


def test_a_failing_log_sink_drops_rows_but_never_a_request(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log's folder should be")
    log = PredictionLog(str(blocker), flush_interval=0.05)
    log.append(
        "feedback", "m", [{"request_id": "a", "timestamp": pd.Timestamp.now(tz="UTC"), "truth": "1"}], 1
    )
    assert log.flush(5)
    assert log.dropped == 1 and log.written == 0
    log.close()
    log.append("feedback", "m", [], 3)
    assert log.dropped == 4  # after close: counted, never raised


def test_a_full_buffer_drops_instead_of_blocking(tmp_path: Path) -> None:
    import threading

    stuck = threading.Event()
    release = threading.Event()

    class StuckSink(PredictionLog):
        def _write_files(self, kind: str, model: str, batches: list[Any]) -> None:
            stuck.set()
            release.wait(30)

    log = StuckSink(str(tmp_path), flush_interval=0.01, capacity=2)
    row = [{"request_id": "a", "timestamp": pd.Timestamp.now(tz="UTC"), "truth": "1"}]
    log.append("feedback", "m", row, 1)
    assert stuck.wait(10)  # the writer is now stuck in the sink
    started = time.perf_counter()
    for _ in range(50):
        log.append("feedback", "m", row, 1)
    assert time.perf_counter() - started < 5  # blocking would take the sink's 30 s
    assert log.dropped == 48  # two fit the queue; the rest are counted, not waited for
    release.set()
    log.close(timeout=5)


# -- auth ----------------------------------------------------------------------------------------------


def test_bearer_token(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLEN_SERVE_TOKEN", "s3cret")
    with TestClient(build_app(options(project))) as client:
        refused = client.post("/predict", json=[ROW])
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert (
            client.post("/predict", json=[ROW], headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        assert (
            client.post("/predict", json=[ROW], headers={"Authorization": "Bearer s3cret"}).status_code == 200
        )
        assert client.get("/health").status_code == 200  # probes stay open
        assert client.get("/v2/health/ready").status_code == 200


# -- following the registry, champion and challenger --------------------------------------------------------


def test_the_server_follows_the_alias(project: Path) -> None:
    app = build_app(options(project))
    with TestClient(app) as client:
        assert client.get("/health").json()["version"] == "1"
        set_alias("churn", 2, "production")
        server = app.state.server
        assert server.refresh() is True
        assert client.get("/health").json()["version"] == "2"
        assert client.post("/predict", json=[ROW]).json()["version"] == "2"
        assert 'version="2"' in client.get("/metrics").text


def test_shadow_answers_are_logged_never_returned(project: Path) -> None:
    with TestClient(build_app(options(project, shadow="churn@staging"))) as client:
        answers = [client.post("/predict", json=[ROW]).json() for _ in range(4)]
        assert all(a["version"] == "1" and "role" not in a for a in answers)
        assert client.get("/health").json()["shadow"]["version"] == "2"
    table = read_log(str(project / "log"), "predictions", "churn").to_pandas()
    assert sorted(table["role"]) == ["champion"] * 4 + ["shadow"] * 4
    shadow = table[table["role"] == "shadow"]
    assert set(shadow["version"]) == {"2"}
    assert set(shadow["request_id"]) == {a["request_id"] for a in answers}


def test_canary_takes_its_share_sticky_per_key(project: Path) -> None:
    with TestClient(build_app(options(project, canary="churn@staging:25"))) as client:
        versions = [client.post("/predict", json=[ROW]).json()["version"] for _ in range(200)]
        share = versions.count("2") / len(versions)
        assert 0.15 < share < 0.35
        for key in ("alice", "bob", "carol", "dave"):
            seen = {
                client.post("/predict", json=[ROW], headers={"X-Molen-Key": key}).json()["version"]
                for _ in range(5)
            }
            assert len(seen) == 1
    table = read_log(str(project / "log"), "predictions", "churn").to_pandas()
    assert set(table["role"]) == {"champion", "canary"}


def test_docs_show_the_signature(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    row = body["oneOf"][0]["items"]
    assert row["properties"]["plan"]["enum"] == ["basic", "max", "pro"]
    assert row["required"] == ["tenure", "charges", "plan"]
    assert client.get("/docs").status_code == 200


# -- the real server -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


@pytest.mark.parametrize("workers", [1, 2])
def test_molen_serve_process_follows_alias_without_dropping_requests(project: Path, workers: int) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "molen",
            "serve",
            "churn@production",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--poll",
            "0.2",
        ],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/health")
        versions = []
        failures = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:  # one kept-alive connection
            started = time.perf_counter()
            for number in range(300):
                if number == 100:
                    set_alias("churn", 2, "production")
                response = client.post("/predict", json=[ROW])
                if response.status_code != 200:
                    failures += 1
                versions.append(response.json()["version"])
            elapsed = time.perf_counter() - started
        assert failures == 0
        assert versions[0] == "1" and versions[-1] == "2"
        assert elapsed / 300 < 0.030, f"{elapsed / 300 * 1000:.1f} ms a request: kept-alive requests stall"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    rows = read_log(str(project / ".molen" / "log"), "predictions", "churn").num_rows
    assert rows == 300  # flushed on shutdown: every answered row


def test_text_labels_are_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "labels"
    init_project(root, experiment="serve")
    monkeypatch.chdir(root)
    frame, target = churn()
    numbers = frame[["tenure", "charges"]]
    labels = np.where(target == 1, "leave", "stay")
    with molen.start_run() as run:
        run.log_model(LogisticRegression().fit(numbers, labels), "words", reference=numbers)
    with TestClient(build_app(ServeOptions(uri="words/1", project=str(root), poll_interval=0))) as client:
        row = {"tenure": 3, "charges": 80.5}
        doc = client.post("/predict", json=[row]).json()
        assert doc["predictions"][0] in {"leave", "stay"} and doc["classes"] == ["leave", "stay"]
        assert (
            client.post("/invocations", json={"dataframe_records": [row]}).json()["predictions"]
            == doc["predictions"]
        )
        v2 = client.post(
            "/v2/models/words/infer",
            json={"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [[3, 80.5]]}]},
        ).json()
        assert v2["outputs"][0]["data"] == doc["predictions"] and v2["outputs"][0]["datatype"] == "BYTES"


def test_one_model_call_answers_labels_and_probabilities(project: Path) -> None:
    model = molen.load_model("churn/1")
    assert model.manifest["predict_is_argmax"] is True
    frame, _ = churn(seed=3)
    checked = model.validate(frame)
    labels, probabilities = model.predict_both_validated(checked)
    assert labels.tolist() == model.model.predict(frame).tolist()
    np.testing.assert_allclose(probabilities, model.model.predict_proba(frame))


def test_many_batches_become_one_table_column_by_column(project: Path) -> None:
    from molen.serving.predlog import PredictionBatch, batches_to_arrow

    matrix = np.array([[1.0, 2.0], [3.0, 4.0]])
    frame = pd.DataFrame({"a": [5.0], "b": [6.0]})
    batches = [
        PredictionBatch(
            ["a", "b"],
            matrix,
            ["r1", "r2"],
            "1",
            "champion",
            1.5,
            np.array([0, 1]),
            np.array([[0.9, 0.1], [0.2, 0.8]]),
        ),
        PredictionBatch(["a", "b"], frame, ["r3"], "2", "canary", 2.5, np.array([1]), np.array([[0.4, 0.6]])),
    ]
    table = batches_to_arrow(batches).to_pylist()
    assert [row["request_id"] for row in table] == ["r1", "r2", "r3"]
    assert [row["inputs"] for row in table] == [
        {"a": 1.0, "b": 2.0},
        {"a": 3.0, "b": 4.0},
        {"a": 5.0, "b": 6.0},
    ]
    assert [row["version"] for row in table] == ["1", "1", "2"] and [row["role"] for row in table][
        -1
    ] == "canary"
    assert [row["probability"] for row in table] == [0.9, 0.8, 0.6]
    assert table[2]["probabilities"] == [0.4, 0.6] and table[1]["latency_ms"] == 1.5
    # an answer without probabilities (MLflow's protocol) in the same flush: nulls, same columns
    plain = PredictionBatch(["a", "b"], frame, ["r4"], "1", "champion", 1.0, np.array([0]), None)
    mixed = batches_to_arrow([*batches, plain]).to_pylist()
    assert [row["probability"] for row in mixed] == [0.9, 0.8, 0.6, None]
    assert mixed[0]["probabilities"] == [0.9, 0.1] and mixed[3]["probabilities"] is None


def test_numeric_models_take_a_checked_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    root = tmp_path / "numbers"
    init_project(root, experiment="serve")
    monkeypatch.chdir(root)
    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(200, 4)), columns=["a", "b", "c", "d"]).assign(
        n=rng.integers(0, 9, 200)
    )
    target = (train["a"] > 0).astype(int)
    with molen.start_run() as run:
        run.log_model(LogisticRegression().fit(train, target), "numbers", reference=train)
    model = molen.load_model("numbers/1")
    rows = train.head(5).to_dict("records")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names" reaches anyone
        given, inputs = model.prepare(rows)
        assert isinstance(given, np.ndarray) and given.shape == (5, 5) and inputs is given
        labels, _ = model.predict_both_prepared(given)
    assert labels.tolist() == model.model.predict(train.head(5)).tolist()
    for bad, message in [
        ({**rows[0], "a": "x"}, "expected a number"),
        ({**rows[0], "n": 2.5}, "expected whole numbers"),
        ({k: v for k, v in rows[0].items() if k != "c"}, "missing column 'c'"),
        ({**rows[0], "b": None}, "missing value"),
    ]:
        with pytest.raises(molen.MolenError, match=message):
            model.prepare([bad])

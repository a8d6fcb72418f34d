"""The real `mlflow` client (pinned in the dev extra) against `molen server`: training code full of
mlflow.log_* runs unchanged, what it logs is molen's, and molen's runs are visible to MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import molen_server
from molen.project import init_project

CLIENT = """
import json, sys
import mlflow
from mlflow import MlflowClient

mlflow.set_experiment("mlflow-exp")
with mlflow.start_run(run_name="from-mlflow") as run:
    mlflow.log_param("lr", 0.01)
    mlflow.log_params({"epochs": 3, "optimizer": "adam"})
    mlflow.log_metric("loss", 0.5, step=1)
    mlflow.log_metrics({"acc": 0.9, "loss": 0.4}, step=2)
    mlflow.set_tag("team", "anchor")
found = mlflow.search_runs(filter_string="metrics.acc > 0.5 and params.optimizer = 'adam'")
history = MlflowClient().get_metric_history(run.info.run_id, "loss")
print(json.dumps({
    "run_id": run.info.run_id,
    "found": found["run_id"].tolist(),
    "history": [[m.step, m.value] for m in history],
    "status": MlflowClient().get_run(run.info.run_id).info.status,
}))
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with molen_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "objects") as url:
        yield url


def mlflow_client(server: str, code: str, cwd: Path) -> Any:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_mlflow_training_code_logs_into_molen_unchanged(server: str, tmp_path: Path) -> None:
    logged = mlflow_client(server, CLIENT, tmp_path)
    assert logged["found"] == [logged["run_id"]] and logged["status"] == "FINISHED"
    assert logged["history"] == [[1, 0.5], [2, 0.4]]

    project = tmp_path / "team"
    init_project(project)
    env = {**os.environ, "MOLEN_TRACKING_URI": server}
    listed = subprocess.run(
        [sys.executable, "-m", "molen", "runs", "list", "-e", "mlflow-exp", "-f", "json"],
        cwd=project, env=env, capture_output=True, text=True,
    )  # fmt: skip
    (run,) = json.loads(listed.stdout)
    assert run["id"] == logged["run_id"] and run["name"] == "from-mlflow" and run["status"] == "FINISHED"
    assert run["params"] == {"lr": "0.01", "epochs": "3", "optimizer": "adam"}
    assert run["metrics"] == {"loss": 0.4, "acc": 0.9} and run["tags"]["team"] == "anchor"


def test_molen_runs_are_visible_to_mlflow_search_runs(server: str, tmp_path: Path) -> None:
    project = tmp_path / "team"
    init_project(project, experiment="molen-exp")
    script = (
        "import molen\n"
        "with molen.start_run(name='from-molen') as run:\n"
        "    run.log_params({'depth': 8})\n"
        "    run.log_metric('auc', 0.93)\n"
        "print(run.id)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=project, env={**os.environ, "MOLEN_TRACKING_URI": server},
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    seen = mlflow_client(
        server,
        "import json, mlflow\n"
        "runs = mlflow.search_runs(experiment_names=['molen-exp'], filter_string='metrics.auc > 0.9')\n"
        "print(json.dumps({'ids': runs['run_id'].tolist(), 'depth': runs['params.depth'].tolist(),"
        " 'name': runs['tags.mlflow.runName'].tolist()}))\n",
        tmp_path,
    )
    assert seen == {"ids": [run_id], "depth": ["8"], "name": ["from-molen"]}


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_error_semantics_the_client_depends_on(server: str) -> None:
    api = f"{server}/api/2.0/mlflow"
    try:
        urllib.request.urlopen(f"{api}/experiments/get-by-name?experiment_name=nope", timeout=30)
        raise AssertionError("a missing experiment must be a 404")
    except urllib.error.HTTPError as error:
        assert error.code == 404 and json.loads(error.read())["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    status, answer = post(f"{api}/experiments/create", {"name": "twice"})
    assert status == 200 and answer["experiment_id"]
    status, answer = post(f"{api}/experiments/create", {"name": "twice"})
    assert status == 400 and answer["error_code"] == "RESOURCE_ALREADY_EXISTS"
    status, created = post(f"{api}/runs/create", {"experiment_id": answer.get("experiment_id", "1") or "1"})
    run_id = created["run"]["info"]["run_id"]
    assert post(f"{api}/runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"})[0] == 200
    status, answer = post(f"{api}/runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.2"})
    assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"  # a client error: never 5xx
    status, answer = post(f"{api}/runs/log-metric", {"run_id": "0" * 32, "key": "m", "value": 1.0})
    assert status == 404 and answer["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    status, answer = post(f"{api}/runs/search", {"filter": "metrics.acc >>> 1"})
    assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
    for unserved in (f"{api}/traces/start", f"{server}/api/3.0/mlflow/traces/start"):
        status, answer = post(unserved, {})
        assert status == 404 and answer["error_code"] == "ENDPOINT_NOT_FOUND", unserved
    # the endpoints it serves still answer (the catch-all comes last)
    assert post(f"{api}/experiments/create", {"name": "after"})[0] == 200


MODEL_CLIENT = """
import json
import mlflow, numpy as np, pandas as pd
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

mlflow.set_experiment("models")
X = pd.DataFrame({"a": np.arange(100.0), "b": np.arange(100.0) % 7})
y = (X.a > 50).astype(int)
with mlflow.start_run() as run:
    mlflow.log_dict({"k": 1}, "cfg/config.json")
    with open("notes.txt", "w") as handle:
        handle.write("hello")
    mlflow.log_artifact("notes.txt")
    mlflow.sklearn.log_model(
        LogisticRegression().fit(X, y),
        name="model",
        registered_model_name="anchor_model",
        input_example=X.head(2),
    )
loaded = mlflow.pyfunc.load_model("models:/anchor_model/1")
MlflowClient().set_registered_model_alias("anchor_model", "champion", "1")
by_alias = mlflow.sklearn.load_model("models:/anchor_model@champion")
print(json.dumps({
    "run_id": run.info.run_id,
    "pyfunc": loaded.predict(pd.DataFrame({"a": [80.0, 2.0], "b": [1.0, 2.0]})).tolist(),
    "alias": by_alias.predict(pd.DataFrame({"a": [90.0], "b": [3.0]})).tolist(),
    "config": mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/cfg/config.json"),
    "listing": sorted(f.path for f in MlflowClient().list_artifacts(run.info.run_id)),
}))
"""


def test_mlflow_models_are_logged_registered_aliased_and_loaded(server: str, tmp_path: Path) -> None:
    found = mlflow_client(server, MODEL_CLIENT, tmp_path)
    assert found["pyfunc"] == [1, 0] and found["alias"] == [1]
    assert found["config"] == {"k": 1} and found["listing"] == ["cfg", "notes.txt"]
    # molen sees the registered version and its alias; it points molen users to MLflow's loader
    project = tmp_path / "team"
    init_project(project)
    env = {**os.environ, "MOLEN_TRACKING_URI": server}
    listed = subprocess.run(
        [sys.executable, "-m", "molen", "models", "list", "-f", "json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    (model,) = json.loads(listed.stdout)
    assert model["name"] == "anchor_model" and model["aliases"] == {"champion": 1}
    shown = subprocess.run(
        [sys.executable, "-m", "molen", "models", "show", "anchor_model@champion"],
        cwd=project, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert shown.returncode == 2 and "was logged by MLflow" in shown.stderr


def test_artifact_paths_never_escape(server: str, tmp_path: Path) -> None:
    status, created = post(f"{server}/api/2.0/mlflow/runs/create", {"experiment_id": "0"})
    if status == 404:  # no default experiment yet
        experiment = post(f"{server}/api/2.0/mlflow/experiments/create", {"name": "paths"})[1][
            "experiment_id"
        ]
        status, created = post(f"{server}/api/2.0/mlflow/runs/create", {"experiment_id": experiment})
    info = created["run"]["info"]
    base = f"{server}/api/2.0/mlflow-artifacts/artifacts/{info['experiment_id']}/{info['run_id']}/artifacts"
    attempts = [
        "../../../etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        "..%252F..%252Fetc%252Fpasswd",
        "%2Fetc%2Fpasswd",
        "a/../../b",
        "a%5C..%5C..%5Cb",
        "a%00b",
        "./a",
        "a//b",
    ]
    for attempt in attempts:
        put = urllib.request.Request(f"{base}/{attempt}", data=b"x", method="PUT")
        try:
            with urllib.request.urlopen(put, timeout=30) as answer:
                status = answer.status
        except urllib.error.HTTPError as error:
            status = error.code
        assert status in {400, 404}, (attempt, status)
        try:
            urllib.request.urlopen(f"{base}/{attempt}", timeout=30)
            raise AssertionError(f"{attempt} was served")
        except urllib.error.HTTPError as error:
            assert error.code in {400, 404} and b"root:" not in error.read()
    listed = urllib.request.urlopen(
        f"{server}/api/2.0/mlflow-artifacts/artifacts?path={info['experiment_id']}/{info['run_id']}/artifacts",
        timeout=30,
    )
    assert json.loads(listed.read()) == {"files": []}  # nothing was stored under any of those names


HISTORY = """
import mlflow, numpy as np, pandas as pd
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

mlflow.set_tracking_uri("sqlite:///mlflow.db")
mlflow.set_experiment("legacy")
X = pd.DataFrame({"a": np.arange(60.0), "b": np.arange(60.0) % 5})
y = (X.a > 30).astype(int)
for lr in (0.1, 0.2):
    with mlflow.start_run(run_name=f"lr-{lr}"):
        mlflow.log_param("lr", lr)
        for step in range(20):
            mlflow.log_metric("loss", lr / (step + 1), step=step)
        mlflow.log_dict({"lr": lr}, "config/settings.json")
        if lr == 0.2:
            model = LogisticRegression().fit(X, y)
            mlflow.sklearn.log_model(model, name="model", registered_model_name="legacy_model")
MlflowClient().set_registered_model_alias("legacy_model", "production", "1")
"""


def test_molen_import_mlflow_moves_a_store_idempotently(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    made = subprocess.run(
        [sys.executable, "-c", HISTORY], cwd=legacy, capture_output=True, text=True, timeout=300
    )
    assert made.returncode == 0, made.stderr[-3000:]
    project = tmp_path / "team"
    init_project(project)

    def molen(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "molen", *args], cwd=project, capture_output=True, text=True
        )

    source = f"sqlite:///{legacy / 'mlflow.db'}"
    first = molen("import", "mlflow", "--from", source, "--artifacts", str(legacy))
    assert first.returncode == 0, first.stderr
    assert "runs: 2 imported (0 already here), 40 metric values, 2 artifacts" in first.stdout
    assert "model versions: 1 imported" in first.stdout
    runs = json.loads(molen("runs", "list", "-e", "legacy", "-f", "json").stdout)
    assert sorted(r["name"] for r in runs) == ["lr-0.1", "lr-0.2"]
    assert all(r["status"] == "FINISHED" for r in runs)
    count = f"import molen; print(len(molen.get_metric_history('{runs[0]['id']}', 'loss')))"
    history = subprocess.run(
        [sys.executable, "-c", count],
        cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    assert history.stdout.strip() == "20"
    shown = molen("runs", "show", runs[0]["id"][:8], "-f", "json")
    assert "config/settings.json" in shown.stdout
    models = json.loads(molen("models", "list", "-f", "json").stdout)
    assert [(m["name"], m["aliases"]) for m in models] == [("legacy_model", {"production": 1})]
    again = molen("import", "mlflow", "--from", source, "--artifacts", str(legacy))
    assert "runs: 0 imported (2 already here)" in again.stdout
    assert "model versions: 0 imported (1 already here)" in again.stdout
    # the imported model is served back to MLflow's client by molen server
    with molen_server(f"sqlite:///{project}/.molen/molen.db", project / ".molen" / "cache") as url:
        loaded = mlflow_client(
            url,
            "import json, mlflow, pandas as pd\n"
            "m = mlflow.pyfunc.load_model('models:/legacy_model@production')\n"
            "print(json.dumps(m.predict(pd.DataFrame({'a': [50.0, 1.0], 'b': [0.0, 1.0]})).tolist()))\n",
            tmp_path,
        )
    assert loaded == [1, 0]

"""Explanations: for every flavor, attributions plus the base value equal the explained output."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

import molen
from molen.project import init_project

pytest.importorskip("shap")

from molen.explain.shapley import explain


class Doubler:
    def predict(self, frame: Any) -> Any:
        return frame["a"].to_numpy() * 2.0 + frame["b"].to_numpy()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "proj"
    init_project(root, experiment="explain")
    monkeypatch.chdir(root)
    yield root


def data(rows: int = 300) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"a": rng.normal(size=rows), "b": rng.normal(size=rows), "n": rng.integers(0, 5, rows)}
    )
    return frame, (frame["a"] + 0.5 * frame["b"] > 0).astype(int)


def logged(model: Any, reference: pd.DataFrame) -> Any:
    with molen.start_run() as run:
        return molen.load_model(run.log_model(model, reference=reference).uri)


def log_forest(frame: pd.DataFrame, target: pd.Series) -> None:
    """A small random forest, registered as churn."""
    with molen.start_run() as run:
        run.log_model(
            RandomForestClassifier(n_estimators=10, random_state=0).fit(frame, target),
            "churn",
            reference=frame,
        )


def check(explanation: Any, expected_outputs: Any, *, atol: float = 1e-5) -> None:
    sums = explanation.values.sum(axis=1) + explanation.base_values
    np.testing.assert_allclose(sums, explanation.outputs, atol=1e-6)  # additivity
    np.testing.assert_allclose(explanation.outputs, expected_outputs, atol=atol)  # of the model's output


def test_tree_explainer_for_a_forest(project: Path) -> None:
    frame, target = data()
    model = logged(RandomForestClassifier(n_estimators=20, random_state=0).fit(frame, target), frame)
    explanation = explain(model, frame.head(8))
    assert explanation.explainer == "tree"
    check(explanation, model.predict_proba(frame.head(8))[:, 1])


def test_linear_explainer_in_log_odds(project: Path) -> None:
    frame, target = data()
    model = logged(LogisticRegression().fit(frame, target), frame)
    explanation = explain(model, frame.head(8))
    assert explanation.explainer == "linear" and explanation.output.startswith("log-odds")
    check(explanation, model.model.decision_function(frame.head(8)))


def test_xgboost_and_lightgbm(project: Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    lightgbm = pytest.importorskip("lightgbm")
    frame, target = data()
    for estimator in (
        xgboost.XGBClassifier(n_estimators=20, max_depth=3),
        lightgbm.LGBMClassifier(n_estimators=20, verbose=-1),
    ):
        model = logged(estimator.fit(frame, target), frame)
        explanation = explain(model, frame.head(8))
        assert explanation.explainer == "tree"
        probabilities = model.predict_proba(frame.head(8))[:, 1]
        check(explanation, np.log(probabilities / (1 - probabilities)), atol=1e-4)  # float32 trees


def test_model_agnostic_explainer_for_a_pipeline_with_text_and_a_generic_model(project: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame, target = data()
    frame = frame.assign(plan=np.where(frame["n"] > 2, "pro", "basic"))
    pipeline = Pipeline(
        [
            ("columns", ColumnTransformer([("plan", OneHotEncoder(), ["plan"])], remainder="passthrough")),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, target)
    model = logged(pipeline, frame)
    explanation = explain(model, frame.head(5))
    assert explanation.explainer == "permutation" and explanation.output == "probability of 1"
    check(explanation, model.predict_proba(frame.head(5))[:, 1])
    generic = logged(Doubler(), frame[["a", "b"]])
    explanation = explain(generic, frame[["a", "b"]].head(5))
    check(explanation, generic.predict(frame[["a", "b"]].head(5)))
    regression = logged(LinearRegression().fit(frame[["a", "b"]], frame["a"]), frame[["a", "b"]])
    check(explain(regression, frame[["a", "b"]].head(5)), regression.predict(frame[["a", "b"]].head(5)))


def test_molen_explain_command(project: Path) -> None:
    frame, target = data()
    log_forest(frame, target)
    frame.head(3).to_csv(project / "rows.csv", index=False)
    done = subprocess.run(
        [sys.executable, "-m", "molen", "explain", "churn/1", "--input", "rows.csv", "--format", "json"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["explainer"] == "tree" and len(doc["rows"]) == 3
    row = doc["rows"][0]
    assert sum(row["attributions"].values()) + row["base_value"] == pytest.approx(row["output"])
    table = subprocess.run(
        [sys.executable, "-m", "molen", "explain", "churn/1", "--input", "rows.csv"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert table.returncode == 0 and "base value" in table.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "molen", "explain", "churn/1", "--input", "missing.csv"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 3 and "no such file" in bad.stderr


def test_the_server_explains(project: Path) -> None:
    from fastapi.testclient import TestClient

    from molen.serving.run import ServeOptions, build_app

    frame, target = data()
    log_forest(frame, target)
    rows = frame.head(2).to_dict("records")
    with TestClient(build_app(ServeOptions(uri="churn/1", project=str(project), poll_interval=0))) as client:
        doc = client.post("/explain", json=rows).json()
        assert doc["version"] == "1" and doc["explainer"] == "tree" and len(doc["rows"]) == 2
        row = doc["rows"][0]
        assert sum(row["attributions"].values()) + row["base_value"] == pytest.approx(row["output"])
        assert client.post("/explain", json=[{"a": 1.0}]).status_code == 422


def test_global_importance_is_computed_when_a_model_is_logged(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLEN_MODELS_IMPORTANCE", "true")
    frame, target = data()
    log_forest(frame, target)
    model = molen.load_model("churn/1")
    importance = model.manifest["importance"]
    assert next(iter(importance)) in {"a", "b"} and importance["n"] < importance["a"]  # n carries no signal
    card = subprocess.run(
        [sys.executable, "-m", "molen", "models", "show", "churn/1", "--card"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert "## Global feature importance" in card.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "molen", "models", "show", "churn/1"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert "importance" in shown.stdout and "a=" in shown.stdout


def test_plots_as_png_and_in_html(project: Path) -> None:
    frame, target = data()
    log_forest(frame, target)
    frame.head(4).to_csv(project / "rows.csv", index=False)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "molen",
            "explain",
            "churn/1",
            "-i",
            "rows.csv",
            "-f",
            "html",
            "-o",
            "why.html",
            "--png",
            "plots",
        ],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    names = sorted(path.name for path in (project / "plots").iterdir())
    assert names == [
        "importance-bar.png",
        "importance-beeswarm.png",
        "row-0-waterfall.png",
        "row-1-waterfall.png",
        "row-2-waterfall.png",
        "row-3-waterfall.png",
    ]
    assert all((project / "plots" / name).read_bytes().startswith(b"\x89PNG") for name in names)
    page = (project / "why.html").read_text()
    assert (
        page.count("data:image/png;base64,") == 6
        and "<script" not in page
        and "http" not in page.split("<body>")[0]
    )


def test_why_did_we_answer_that_request(project: Path) -> None:
    from fastapi.testclient import TestClient

    from molen.explain.requests import explain_request
    from molen.serving.run import ServeOptions, build_app
    from molen.workspace import open_workspace

    frame, target = data()
    log_forest(frame, target)
    rows = frame.head(2).to_dict("records")
    log_root = str(project / ".molen" / "log")
    for explain_log in (False, True):
        options = ServeOptions(
            uri="churn/1", project=str(project), log_root=log_root, poll_interval=0, explain_log=explain_log
        )
        with TestClient(build_app(options)) as client:
            answer = client.post("/predict", json=rows).json()
        found = explain_request(answer["ids"][1], log_root=log_root, workspace=open_workspace())
        assert found.logged is explain_log and (found.model, found.version) == ("churn", "1")
        assert found.prediction == answer["predictions"][1]
        assert sum(found.attributions.values()) + found.base_value == pytest.approx(found.value)
        direct = explain(molen.load_model("churn/1"), frame.iloc[[1]]).rows()[0]
        assert found.attributions == pytest.approx(direct["attributions"])
    shown = subprocess.run(
        [sys.executable, "-m", "molen", "explain", "--request-id", answer["ids"][0]],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0 and "logged when served" in shown.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "molen", "explain", "--request-id", "nope"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 3 and "no prediction with request id 'nope'" in missing.stderr

"""Model packages: flavors, signatures, input checking, the reference profile, the card, and
refusing tampered bytes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression, LogisticRegression

import molen
from churn import churn_data, churn_pipeline
from molen.errors import (
    CorruptObjectError,
    InputSchemaError,
    InvalidNameError,
    InvalidValueError,
    NotFoundError,
)
from molen.models.signature import ColumnSpec, OutputSpec, Signature, infer_signature
from molen.project import init_project
from molen.workspace import open_workspace

pytestmark = pytest.mark.usefixtures("no_importance")


class Doubler:
    """A model that is just a Python object with predict (the generic flavor)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, frame: Any) -> Any:
        return frame["x"].to_numpy() * self.factor


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "proj"
    init_project(root, experiment="models")
    monkeypatch.chdir(root)
    yield root
    while (run := molen.active_run()) is not None:
        run.end()


def log(model: Any, name: str | None = "churn", **options: Any) -> Any:
    with molen.start_run() as run:
        run.log_metric("auc", 0.9)
        return run.log_model(model, name, **options)


# -- scikit-learn ----------------------------------------------------------------------------------


def test_sklearn_pipeline_round_trip_by_every_uri(project: Path) -> None:
    frame, target = churn_data()
    pipeline = churn_pipeline().fit(frame, target)
    logged = log(pipeline, reference=frame, y_reference=target)
    assert logged.uri == "churn/1" and logged.flavor == "sklearn"
    molen.load_model("churn/1")  # registered
    from molen.registry.service import set_alias

    set_alias("churn", 1, "production")
    for uri in (
        "churn/1",
        "churn@latest",
        "churn@production",
        f"run:{logged.run_id[:8]}/model",
        "models:/churn/1",
    ):
        model = molen.load_model(uri)
        assert isinstance(model, molen.Predictor)
        np.testing.assert_array_equal(model.predict(frame), pipeline.predict(frame))
        np.testing.assert_allclose(model.predict_proba(frame), pipeline.predict_proba(frame))
    model = molen.load_model("churn@production")
    assert model.version == 1 and model.name == "churn" and model.aliases == ("production",)
    assert model.task == "classification" and model.classes == [0, 1]
    assert model.lineage["run"]["id"] == logged.run_id
    assert model.lineage["environment"]["scikit-learn"]


def test_package_holds_signature_example_profile_card_and_requirements(project: Path) -> None:
    frame, target = churn_data()
    logged = log(
        churn_pipeline().fit(frame, target), reference=frame, y_reference=target, description="Who leaves"
    )
    record = molen.get_run(logged.run_id)
    paths = {artifact.path for artifact in record.artifacts}
    for name in (
        "model.pkl",
        "signature.json",
        "input_example.json",
        "profile.json",
        "reference.parquet",
        "requirements.txt",
        "card.md",
        "card.html",
        "molen-model.json",
    ):
        assert f"model/{name}" in paths
    store = open_workspace().objects
    files = {
        a.path.removeprefix("model/"): store.get_bytes(a.digest)
        for a in record.artifacts
        if a.path.startswith("model/")
    }
    signature = json.loads(files["signature.json"])
    assert signature["inputs"] == [
        {"name": "tenure", "type": "integer", "nullable": False},
        {"name": "charges", "type": "float", "nullable": False},
        {"name": "plan", "type": "string", "nullable": False, "categories": ["basic", "max", "pro"]},
    ]
    assert signature["output"] == {"type": "label", "classes": [0, 1]}
    assert len(json.loads(files["input_example.json"])) == 5
    profile = json.loads(files["profile.json"])
    assert profile["rows"] == 400
    tenure = profile["features"]["tenure"]
    assert tenure["min"] == frame["tenure"].min() and tenure["max"] == frame["tenure"].max()
    assert sum(tenure["histogram"]["counts"]) == 400
    assert {item["value"] for item in profile["features"]["plan"]["top"]} == {"basic", "pro", "max"}
    assert profile["target"]["mean"] == pytest.approx(target.mean())
    assert "prediction" in profile
    sample = pd.read_parquet(io.BytesIO(files["reference.parquet"]))
    assert list(sample.columns) == ["tenure", "charges", "plan", "__target__", "__prediction__"]
    assert len(sample) == 400
    assert b"scikit-learn==" in files["requirements.txt"]
    card = files["card.md"].decode()
    assert "Who leaves" in card and "| auc | 0.9 |" in card and "| plan | string |" in card
    html = files["card.html"].decode()
    assert html.startswith("<!doctype html>") and "<table>" in html and "http" not in html.split("<body>")[0]
    assert html.count("<svg") == 5  # tenure, charges, plan, the target and the predictions
    assert "<script" not in html


def test_reference_sample_is_capped(project: Path) -> None:
    from molen.models.profile import SAMPLE_ROWS

    frame, target = churn_data(rows=SAMPLE_ROWS + 700)
    logged = log(churn_pipeline().fit(frame, target), reference=frame, y_reference=target)
    record = molen.get_run(logged.run_id)
    parquet = next(a for a in record.artifacts if a.path == "model/reference.parquet")
    sample = pd.read_parquet(io.BytesIO(open_workspace().objects.get_bytes(parquet.digest)))
    assert len(sample) == SAMPLE_ROWS
    profile = next(a for a in record.artifacts if a.path == "model/profile.json")
    assert json.loads(open_workspace().objects.get_bytes(profile.digest))["rows"] == SAMPLE_ROWS + 700


def test_skops_serialization_loads_without_pickle(project: Path) -> None:
    frame, target = churn_data()
    pipeline = churn_pipeline().fit(frame, target)
    logged = log(pipeline, reference=frame, serialization="skops")
    model = molen.load_model(logged.uri)
    assert model.manifest["serialization"] == "skops" and model.manifest["model_file"] == "model.skops"
    np.testing.assert_array_equal(model.predict(frame), pipeline.predict(frame))


def test_skops_chosen_by_setting(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLEN_MODELS_SKLEARN_FORMAT", "skops")
    frame, target = churn_data()
    logged = log(
        LogisticRegression().fit(frame[["tenure", "charges"]], target), reference=frame[["tenure", "charges"]]
    )
    assert molen.load_model(logged.uri).manifest["serialization"] == "skops"


def test_regression_model(project: Path) -> None:
    frame, _ = churn_data()
    numbers = frame[["tenure", "charges"]]
    model = LinearRegression().fit(numbers, numbers["charges"] * 2)
    logged = log(model, reference=numbers)
    loaded = molen.load_model(logged.uri)
    assert loaded.task == "regression"
    np.testing.assert_allclose(loaded.predict(numbers), model.predict(numbers))
    with pytest.raises(InvalidValueError, match="without class probabilities"):
        loaded.predict_proba(numbers)


# -- XGBoost, LightGBM, generic ----------------------------------------------------------------------


def test_xgboost_native_format(project: Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    frame, target = churn_data()
    numbers = frame[["tenure", "charges"]]
    classifier = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(numbers, target)
    logged = log(classifier, reference=numbers)
    loaded = molen.load_model(logged.uri)
    assert loaded.flavor == "xgboost" and loaded.manifest["model_file"] == "model.ubj"
    np.testing.assert_array_equal(loaded.predict(numbers), classifier.predict(numbers))
    np.testing.assert_allclose(loaded.predict_proba(numbers), classifier.predict_proba(numbers), rtol=1e-6)
    regressor = xgboost.XGBRegressor(n_estimators=20).fit(numbers, numbers["charges"])
    loaded = molen.load_model(log(regressor, "charges", reference=numbers).uri)
    assert loaded.task == "regression"
    np.testing.assert_allclose(loaded.predict(numbers), regressor.predict(numbers), rtol=1e-6)


def test_lightgbm_native_format_with_categories(project: Path) -> None:
    lightgbm = pytest.importorskip("lightgbm")
    frame, target = churn_data()
    frame = frame.assign(plan=frame["plan"].astype("category"))
    classifier = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(frame, target)
    logged = log(classifier, reference=frame)
    loaded = molen.load_model(logged.uri)
    assert loaded.flavor == "lightgbm" and loaded.manifest["model_file"] == "model.txt"
    assert loaded.signature.inputs[2].type == "category"
    np.testing.assert_array_equal(loaded.predict(frame), classifier.predict(frame))
    np.testing.assert_allclose(loaded.predict_proba(frame), classifier.predict_proba(frame), rtol=1e-6)
    rows = frame.head(3).assign(plan=frame["plan"].head(3).astype(str)).to_dict("records")
    np.testing.assert_array_equal(loaded.predict(rows), classifier.predict(frame.head(3)))
    regressor = lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(frame, frame["charges"])
    loaded = molen.load_model(log(regressor, "charges", reference=frame).uri)
    np.testing.assert_allclose(loaded.predict(frame), regressor.predict(frame), rtol=1e-6)


def test_generic_object_with_predict(project: Path) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    logged = log(Doubler(2.0), "doubler", reference=frame)
    loaded = molen.load_model(logged.uri)
    assert loaded.flavor == "generic" and loaded.task is None
    np.testing.assert_array_equal(loaded.predict([{"x": 5.0}]), [10.0])


def test_objects_without_predict_and_bad_names_are_refused(project: Path) -> None:
    frame, _ = churn_data()
    with molen.start_run() as run:
        with pytest.raises(InvalidValueError, match="no predict method"):
            run.log_model(object(), reference=frame)
        with pytest.raises(InvalidNameError, match="model name"):
            run.log_model(Doubler(1.0), "bad/name", reference=frame)
        with pytest.raises(InvalidValueError, match="reference=X_train"):
            run.log_model(Doubler(1.0))


# -- checking input -------------------------------------------------------------------------------


@pytest.fixture
def churn_model(project: Path) -> Any:
    frame, target = churn_data()
    logged = log(churn_pipeline().fit(frame, target), reference=frame)
    return molen.load_model(logged.uri), frame


def test_every_input_format_gives_the_same_predictions(churn_model: Any) -> None:
    import polars as pl
    import pyarrow as pa

    model, frame = churn_model
    head = frame.head(6)
    expected = model.predict(head)
    for variant in (
        pl.from_pandas(head),
        pa.Table.from_pandas(head, preserve_index=False),
        head.to_dict("records"),
        {column: head[column].tolist() for column in head.columns},
        head.to_numpy(dtype=object),
        [list(row) for row in head.itertuples(index=False)],
    ):
        np.testing.assert_array_equal(model.predict(variant), expected)
    np.testing.assert_array_equal(model.predict(head.to_dict("records")[0]), expected[:1])


@pytest.mark.parametrize(
    ("rows", "column", "message"),
    [
        ([{"tenure": 3, "plan": "basic"}], "charges", "missing column 'charges'"),
        ([{"tenure": 3, "charges": 5.0, "plan": "gold"}], "plan", "unseen category 'gold'"),
        (
            [{"tenure": "three", "charges": 5.0, "plan": "basic"}],
            "tenure",
            "expected a number, got 'three' at row 0",
        ),
        ([{"tenure": 2.5, "charges": 5.0, "plan": "basic"}], "tenure", "expected whole numbers, got 2.5"),
        ([{"tenure": 1, "charges": None, "plan": "basic"}], "charges", "missing value at row 0"),
        ([{"tenure": 1, "charges": 2.0, "plan": None}], "plan", "missing value at row 0"),
        ([{"tenure": 1, "charges": 2.0, "plan": 7}], "plan", "expected text"),
    ],
)
def test_bad_input_names_the_column(
    churn_model: Any, rows: list[dict[str, Any]], column: str, message: str
) -> None:
    model, _ = churn_model
    with pytest.raises(InputSchemaError, match=message) as caught:
        model.predict(rows)
    assert caught.value.column == column
    assert caught.value.http_status == 422
    assert "\n" not in str(caught.value)


def test_safe_casts_are_made(churn_model: Any) -> None:
    model, frame = churn_model
    row = frame.head(1)
    as_text = row.assign(tenure=row["tenure"].astype(str), charges=row["charges"].astype(str))
    as_float = row.assign(tenure=row["tenure"].astype(float))
    expected = model.predict(row)
    np.testing.assert_array_equal(model.predict(as_text), expected)
    np.testing.assert_array_equal(model.predict(as_float), expected)


def test_extra_columns_ignored_or_refused(
    project: Path, churn_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, frame = churn_model
    wider = frame.head(2).assign(customer_id=["a", "b"])[["customer_id", "plan", "charges", "tenure"]]
    np.testing.assert_array_equal(model.predict(wider), model.predict(frame.head(2)))
    strict = molen.load_model(model.uri, extra_columns="refuse")
    with pytest.raises(InputSchemaError, match="unexpected column 'customer_id'"):
        strict.predict(wider)
    monkeypatch.setenv("MOLEN_MODELS_EXTRA_COLUMNS", "refuse")
    with pytest.raises(InputSchemaError, match="unexpected column"):
        molen.load_model(model.uri).predict(wider)


def test_unseen_categories_may_be_allowed(churn_model: Any) -> None:
    model, _ = churn_model
    lenient = molen.load_model(model.uri, unseen_categories="allow")
    assert lenient.predict([{"tenure": 3, "charges": 5.0, "plan": "gold"}]).shape == (1,)


def test_array_of_the_wrong_width_is_refused(churn_model: Any) -> None:
    model, _ = churn_model
    with pytest.raises(InputSchemaError, match="array with 2 columns"):
        model.predict(np.zeros((1, 2)))
    with pytest.raises(InputSchemaError, match="cannot read model input of type str"):
        model.predict("tenure=3")


# -- signatures -----------------------------------------------------------------------------------


def test_inferred_types_nullability_and_categories() -> None:
    frame = pd.DataFrame(
        {
            "count": pd.array([1, None, 3], dtype="Int64"),
            "ratio": [0.5, np.nan, 1.0],
            "flag": [True, False, True],
            "when": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"]),
            "plan": pd.Categorical(["b", "a", "b"], categories=["b", "a"]),
            "city": ["x", "x", "y"],
        }
    )
    signature = infer_signature(frame, OutputSpec("number"))
    assert [(c.name, c.type, c.nullable) for c in signature.inputs] == [
        ("count", "integer", True),
        ("ratio", "float", True),
        ("flag", "boolean", False),
        ("when", "datetime", False),
        ("plan", "category", False),
        ("city", "string", False),
    ]
    assert signature.inputs[4].categories == ("b", "a")  # the training order, which LightGBM needs
    assert signature.inputs[5].categories == ("x", "y")


def test_free_text_columns_take_any_value() -> None:
    frame = pd.DataFrame({"comment": [f"text {i}" for i in range(100)]})
    assert infer_signature(frame).inputs[0].categories is None


def test_a_signature_file_with_an_unknown_type_is_refused() -> None:
    with pytest.raises(InvalidValueError, match="type 'decimal'"):
        Signature.from_dict({"inputs": [{"name": "a", "type": "decimal"}]})
    with pytest.raises(InvalidValueError, match="not a signature"):
        Signature.from_dict({"columns": []})


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
specs = st.builds(
    ColumnSpec,
    names,
    st.sampled_from(["integer", "float", "boolean", "string", "category", "datetime"]),
    st.booleans(),
    st.none() | st.lists(names, min_size=1, max_size=5, unique=True).map(tuple),
)


@given(st.lists(specs, min_size=1, max_size=8, unique_by=lambda spec: spec.name))
@settings(max_examples=60, deadline=None)
def test_signatures_survive_json(columns: list[ColumnSpec]) -> None:
    signature = Signature(columns, OutputSpec("label", (0, 1)))
    again = Signature.from_dict(json.loads(json.dumps(signature.to_dict())))
    assert again == signature and again.inputs == signature.inputs


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "tenure": st.integers(0, 100),
                "charges": st.floats(-1e6, 1e6),
                "plan": st.sampled_from(["basic", "pro", "max"]),
            }
        ),
        min_size=1,
        max_size=20,
    )
)
@settings(max_examples=40, deadline=None)
def test_valid_rows_always_pass_the_check(rows: list[dict[str, Any]]) -> None:
    frame, _ = churn_data(rows=60)
    signature = infer_signature(frame)
    prepared = signature.prepare(rows)
    assert list(prepared.columns) == ["tenure", "charges", "plan"] and len(prepared) == len(rows)


# -- integrity --------------------------------------------------------------------------------------


def _object_path(store: Any, digest: str) -> Path:
    path = Path(store.root) / store.key_of(digest)
    assert path.is_file(), "expected a loose object"
    return path


@pytest.mark.parametrize("which", ["model.pkl", "molen-model.json"])
def test_tampered_bytes_are_refused(project: Path, which: str) -> None:
    frame, target = churn_data()
    logged = log(churn_pipeline().fit(frame, target), reference=frame)
    record = molen.get_run(logged.run_id)
    artifact = next(a for a in record.artifacts if a.path == f"model/{which}")
    store = open_workspace().objects
    path = _object_path(store, artifact.digest)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObjectError, match=artifact.digest[:12]):
        molen.load_model(logged.uri)


def test_a_missing_model_is_explained(project: Path) -> None:
    with pytest.raises(NotFoundError, match="no registered model 'nope'; none is registered yet"):
        molen.load_model("nope/1")
    frame, target = churn_data()
    log(churn_pipeline().fit(frame, target), reference=frame)
    with pytest.raises(NotFoundError, match="churn has no version 7; versions: 1"):
        molen.load_model("churn/7")
    with pytest.raises(NotFoundError, match="no alias 'production'"):
        molen.load_model("churn@production")
    with pytest.raises(molen.MolenError, match="names no version"):
        molen.load_model("churn")

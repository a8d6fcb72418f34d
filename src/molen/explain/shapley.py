"""Per-row feature attributions with SHAP, the explainer chosen by the kind of model:

* XGBoost, LightGBM and bare scikit-learn tree ensembles: ``shap.TreeExplainer``, explaining
  the raw score (log-odds for classifiers);
* bare scikit-learn linear models: ``shap.LinearExplainer``, the raw score (log-odds);
* anything else (pipelines, any object with ``predict``): ``shap.explainers.Permutation``,
  explaining P(class) for classifiers and the prediction for regressors.

The model-agnostic explainer uses the reference sample stored with the model as background.
SHAP's maskers take numbers only, so text and category columns travel as codes and are decoded
before the model sees them. In every case the attributions plus the base value equal the
explained output (tests check it per flavor).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.errors import MissingDependencyError

if TYPE_CHECKING:
    from molen.models.predictor import Predictor

__all__ = ["Explanation", "explain", "global_importance"]

TREES = {
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "XGBClassifier",
    "XGBRegressor",
    "Booster",
    "LGBMClassifier",
    "LGBMRegressor",
}
LINEAR = {
    "LogisticRegression",
    "LinearRegression",
    "Ridge",
    "Lasso",
    "ElasticNet",
    "SGDClassifier",
    "SGDRegressor",
}
BACKGROUND_ROWS = 100
QUICK_BACKGROUND_ROWS = 30


class Explanation(NamedTuple):
    """Attributions ``values`` (rows × features) and ``base_values`` (rows), whose sums are the
    explained ``output`` of each row (``outputs``)."""

    features: list[str]
    values: Any
    base_values: Any
    outputs: Any
    output: str
    explainer: str
    data: Any

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per row: base value, output, attributions by feature."""
        found = []
        for index in range(len(self.values)):
            found.append(
                {
                    "base_value": float(self.base_values[index]),
                    "output": float(self.outputs[index]),
                    "attributions": {
                        name: float(value)
                        for name, value in zip(self.features, self.values[index], strict=True)
                    },
                }
            )
        return found


def _shap() -> Any:
    try:
        import shap
    except ImportError:
        raise MissingDependencyError("explanations need SHAP: pip install 'molen[explain]'") from None
    return shap


def _background(predictor: Predictor, rows: Any) -> Any:
    """Up to ``BACKGROUND_ROWS`` rows of the reference sample stored with the model (else the
    rows being explained)."""
    import pandas as pd

    from molen.models.package import read_file
    from molen.workspace import open_workspace

    reference = None
    if "reference.parquet" in predictor.manifest.get("files", {}):
        try:
            data = read_file(open_workspace().objects, predictor.manifest, "reference.parquet")
            reference = pd.read_parquet(io.BytesIO(data))[predictor.signature.names]
        except Exception:  # a store that cannot be reached: the rows themselves will do
            reference = None
    source = reference if reference is not None and len(reference) else rows
    if len(source) > BACKGROUND_ROWS:
        source = source.sample(BACKGROUND_ROWS, random_state=0)
    return predictor.validate(source.reset_index(drop=True))


def _estimator(predictor: Predictor) -> Any:
    model = predictor.model
    return getattr(model, "booster", model) if predictor.flavor == "lightgbm" else model


def explain(predictor: Predictor, data: Any, *, quick: bool = False) -> Explanation:
    """Attributions for every row of ``data`` (see the module docstring for the method).
    ``quick`` gives the permutation explainer one permutation per row and a 30-row background
    (global importance averages many rows, so it needs less per row)."""
    frame = predictor.validate(data)
    kind = type(predictor.model).__name__
    numeric = predictor.signature.numeric
    if kind in TREES or predictor.flavor in {"xgboost", "lightgbm"}:
        return _tree(predictor, frame)
    if kind in LINEAR and numeric:
        return _linear(predictor, frame)
    return _permutation(predictor, frame, quick=quick)


def _positive(array: Any, predictor: Predictor) -> Any:
    """The slice for the class explained: the second of two (the positive class)."""
    if array.ndim == 3:
        return array[:, :, -1 if array.shape[2] == 2 else 0]
    return array


def _tree(predictor: Predictor, frame: Any) -> Explanation:
    import numpy as np

    shap = _shap()
    explainer = shap.TreeExplainer(_estimator(predictor))
    given = frame.to_numpy() if predictor._takes_array else frame
    result = explainer(given)
    values = _positive(np.asarray(result.values), predictor)
    base = np.asarray(result.base_values)
    base = base[:, -1] if base.ndim == 2 else base
    base = np.broadcast_to(base, (len(values),)).astype(float)
    label = f"log-odds of {predictor.classes[-1]}" if predictor.classes else "prediction (raw score)"
    return Explanation(
        predictor.signature.names, values, base, values.sum(axis=1) + base, label, "tree", frame
    )


def _linear(predictor: Predictor, frame: Any) -> Explanation:
    import numpy as np

    shap = _shap()
    background = _background(predictor, frame).to_numpy(dtype=float)
    explainer = shap.LinearExplainer(predictor.model, background)
    result = explainer(frame.to_numpy(dtype=float))
    values = _positive(np.asarray(result.values), predictor)
    base = np.broadcast_to(np.asarray(result.base_values, dtype=float).reshape(-1)[:1], (len(values),))
    if np.asarray(result.base_values).size == len(values):
        base = np.asarray(result.base_values, dtype=float).reshape(len(values), -1)[:, -1]
    label = f"log-odds of {predictor.classes[-1]}" if predictor.classes else "prediction"
    return Explanation(
        predictor.signature.names, values, base, values.sum(axis=1) + base, label, "linear", frame
    )


class _Codes:
    """Text and category columns as numbers for SHAP's maskers, and back."""

    def __init__(self, frames: list[Any], names: list[str]) -> None:
        self.names = names
        self.vocabulary: dict[str, list[Any]] = {}
        for name in names:
            if frames[0][name].dtype.kind not in "biuf":
                seen: dict[Any, None] = {}
                for frame in frames:
                    for value in frame[name].astype(object).tolist():
                        seen.setdefault(value, None)
                self.vocabulary[name] = list(seen)

    def encode(self, frame: Any) -> Any:
        import numpy as np

        columns = []
        for name in self.names:
            if name in self.vocabulary:
                index = {value: code for code, value in enumerate(self.vocabulary[name])}
                columns.append(np.array([index[v] for v in frame[name].astype(object).tolist()], dtype=float))
            else:
                columns.append(frame[name].to_numpy(dtype=float))
        return np.column_stack(columns)

    def decode(self, matrix: Any, template: Any) -> Any:
        import pandas as pd

        data = {}
        for position, name in enumerate(self.names):
            column = matrix[:, position]
            if name in self.vocabulary:
                values = self.vocabulary[name]
                data[name] = [values[int(code)] for code in column]
            else:
                data[name] = (
                    column.astype(template[name].dtype, copy=False)
                    if template[name].dtype.kind in "iu"
                    else column
                )
        return pd.DataFrame(data)


def _permutation(predictor: Predictor, frame: Any, *, quick: bool = False) -> Explanation:
    import numpy as np

    shap = _shap()
    background = _background(predictor, frame)
    if quick and len(background) > QUICK_BACKGROUND_ROWS:
        background = background.sample(QUICK_BACKGROUND_ROWS, random_state=0)
    codes = _Codes([frame, background], predictor.signature.names)
    classes = predictor.classes

    def output(matrix: Any) -> Any:
        decoded = codes.decode(matrix, frame)
        if predictor.has_proba and classes:
            return np.asarray(predictor.predict_proba(decoded))[:, -1]
        return np.asarray(predictor.predict(decoded), dtype=float)

    features = len(predictor.signature.names)
    explainer = shap.explainers.Permutation(  # seeded: the same row, the same attributions
        output, shap.maskers.Independent(codes.encode(background), max_samples=BACKGROUND_ROWS), seed=0
    )
    evals = 2 * features + 1 if quick else max(2 * features + 1, 10 * features)
    result = explainer(codes.encode(frame), max_evals=evals, silent=True)  # molen shows its own progress
    values = np.asarray(result.values, dtype=float)
    base = np.asarray(result.base_values, dtype=float).reshape(len(values))
    label = f"probability of {classes[-1]}" if predictor.has_proba and classes else "prediction"
    return Explanation(
        predictor.signature.names, values, base, output(codes.encode(frame)), label, "permutation", frame
    )


def global_importance(predictor: Predictor, rows: Any, *, limit: int = 100) -> dict[str, float]:
    """Mean absolute attribution of each feature over (at most ``limit`` of) ``rows``, largest
    first: what the model leans on overall (the quick permutation budget for models that need
    the permutation explainer)."""
    import numpy as np

    explanation = explain(predictor, rows.head(limit), quick=True)
    means = np.abs(explanation.values).mean(axis=0)
    ranked = sorted(zip(explanation.features, means.tolist(), strict=True), key=lambda item: -item[1])
    return {name: float(value) for name, value in ranked}

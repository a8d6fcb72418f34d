""" "Why did we answer X to request R last Tuesday?": a logged prediction, explained.

The prediction log holds the request's inputs and the version that answered; with
``molen serve --explain-log`` it also holds the attributions computed then. Otherwise they are
computed now, from the same inputs with the same model version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from molen.errors import NotFoundError

if TYPE_CHECKING:
    from molen.workspace import Workspace

__all__ = ["RequestExplanation", "explain_request"]


class RequestExplanation(NamedTuple):
    """The logged prediction and its attributions (``logged``: computed when it was served)."""

    request_id: str
    model: str
    version: str
    role: str
    timestamp: Any
    inputs: dict[str, Any]
    prediction: Any
    explainer: str
    output: str
    base_value: float
    value: float
    attributions: dict[str, float]
    logged: bool


def _find(root: str, kind: str, request_id: str, storage_options: dict[str, Any]) -> dict[str, Any] | None:
    import pyarrow.compute as pc

    from molen.serving.predlog import log_dataset

    dataset = log_dataset(root, kind, storage_options=storage_options)
    if dataset is None:
        return None
    table = dataset.to_table(filter=pc.field("request_id") == request_id)
    if not table.num_rows:
        return None
    rows: list[dict[str, Any]] = table.to_pylist()
    return next((row for row in rows if row.get("role") != "shadow"), rows[0])


def explain_request(request_id: str, *, log_root: str, workspace: Workspace) -> RequestExplanation:
    """The answer logged for ``request_id`` and why (see the module docstring)."""
    import pandas as pd

    from molen.explain.shapley import explain
    from molen.registry.service import load_model
    from molen.serving.predlog import log_storage_options

    options = log_storage_options(log_root, workspace)
    answered = _find(log_root, "predictions", request_id, options)
    if answered is None:
        raise NotFoundError(
            f"no prediction with request id {request_id!r} in the prediction log {log_root}; "
            "check the id and the setting serving.prediction_log (a request of several rows "
            f"logs each row under its own id: {request_id}-0, {request_id}-1, …)"
        )
    base = {
        "request_id": request_id,
        "model": answered["model"],
        "version": str(answered["version"]),
        "role": answered.get("role") or "champion",
        "timestamp": answered["timestamp"],
        "inputs": dict(answered["inputs"]),
        "prediction": answered["prediction"],
    }
    logged = _find(log_root, "explanations", request_id, options)
    if logged is not None and str(logged.get("version")) == base["version"]:
        attributions = {
            key: float(value) for key, value in logged["attributions"].items() if value is not None
        }
        return RequestExplanation(
            **base,
            explainer=logged["explainer"],
            output=logged["output_kind"],
            base_value=float(logged["base_value"]),
            value=float(logged["output"]),
            attributions=attributions,
            logged=True,
        )
    model = load_model(f"{base['model']}/{base['version']}", workspace=workspace)
    explanation = explain(model, pd.DataFrame([base["inputs"]]))
    row = explanation.rows()[0]
    return RequestExplanation(
        **base,
        explainer=explanation.explainer,
        output=explanation.output,
        base_value=row["base_value"],
        value=row["output"],
        attributions=row["attributions"],
        logged=False,
    )

"""``molen monitor``: is the served model still working? A report over a window of the
prediction log, against the reference stored with the model.

It reads the window's rows of the model from the log (Arrow, filtered on the partition and the
timestamp), compares the inputs and the predictions with the model's reference sample
(:func:`molen.monitor.drift.drift_report`), checks data quality against the signature and the
profile, counts volume and latency, and joins the feedback by request id for the realized
performance. The status is ``ok`` (exit 0), ``warning`` (1: a feature drifted or a quality
check failed) or ``alert`` (2: the dataset or the predictions drifted).
"""

from __future__ import annotations

import io
import json
import re
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from molen.errors import InvalidValueError, NotFoundError

if TYPE_CHECKING:
    from molen.workspace import Workspace

__all__ = ["STATUS_CODES", "monitor", "parse_window"]

STATUS_CODES = {"ok": 0, "warning": 1, "alert": 2}
#: A quality check fails when more than this share of the window's rows break it.
QUALITY_SHARE = 0.01
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_window(text: str) -> timedelta:
    """``30m``, ``12h``, ``1d``, ``2w`` as a duration."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", text)
    if not found:
        raise InvalidValueError(f"--window {text!r}: use a number and m, h, d or w, as in 1d or 12h")
    return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])


def _window_rows(root: str, kind: str, model: str, since: datetime, until: datetime) -> Any:
    import os

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    path = f"{root.rstrip('/')}/{kind}"
    if "://" not in path and not os.path.isdir(path):
        return pa.table({})
    dataset = ds.dataset(path, format="parquet", partitioning="hive", ignore_prefixes=[".", "_"])
    stamp = pa.scalar(since, pa.timestamp("us", tz="UTC")), pa.scalar(until, pa.timestamp("us", tz="UTC"))
    wanted = (
        (pc.field("model") == model)
        & (pc.field("timestamp") >= stamp[0])
        & (pc.field("timestamp") < stamp[1])
    )
    return dataset.to_table(filter=wanted)


def _quality(current: Any, signature: Any, profile: dict[str, Any]) -> list[dict[str, Any]]:
    """Missing values, unseen categories and values outside the training range, per feature, in
    more than ``QUALITY_SHARE`` of the rows."""
    checks = []
    features = profile.get("features", {})
    for spec in signature.inputs:
        if spec.name not in current.columns:
            checks.append({"column": spec.name, "check": "schema", "share": 1.0, "detail": "column missing"})
            continue
        column = current[spec.name]
        missing = float(column.isna().mean()) if len(column) else 0.0
        if missing > QUALITY_SHARE and not spec.nullable:
            checks.append({"column": spec.name, "check": "missing values", "share": missing, "detail": ""})
        if spec.categories is not None:
            unseen = ~column.dropna().astype(str).isin(set(spec.categories))
            if unseen.mean() > QUALITY_SHARE:
                examples = sorted(set(column.dropna().astype(str)[unseen].tolist()))[:5]
                checks.append(
                    {
                        "column": spec.name,
                        "check": "unseen categories",
                        "share": float(unseen.mean()),
                        "detail": ", ".join(examples),
                    }
                )
        stats = features.get(spec.name, {})
        if spec.type in {"integer", "float"} and "min" in stats and "max" in stats:
            values = column.dropna().astype(float)
            outside = (values < stats["min"]) | (values > stats["max"])
            if outside.mean() > QUALITY_SHARE:
                checks.append(
                    {
                        "column": spec.name,
                        "check": "out of training range",
                        "share": float(outside.mean()),
                        "detail": f"training range {stats['min']:.4g} – {stats['max']:.4g}",
                    }
                )
    return checks


def _performance(predictions: Any, truth: Any, classifier: bool) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics

    if classifier:
        labels = predictions.astype(str)
        actual = truth.astype(str)
        found = {"accuracy": float(metrics.accuracy_score(actual, labels))}
        classes = sorted(set(actual) | set(labels))
        if len(classes) == 2:
            found["f1"] = float(metrics.f1_score(actual, labels, pos_label=classes[-1], zero_division=0))
            found["precision"] = float(
                metrics.precision_score(actual, labels, pos_label=classes[-1], zero_division=0)
            )
            found["recall"] = float(
                metrics.recall_score(actual, labels, pos_label=classes[-1], zero_division=0)
            )
        return found
    errors = truth.astype(float).to_numpy() - predictions.astype(float).to_numpy()
    return {"mae": float(np.abs(errors).mean()), "rmse": float(np.sqrt((errors**2).mean()))}


def monitor(
    uri: str,
    *,
    log_root: str,
    workspace: Workspace,
    window: timedelta | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    drift_share: float = 0.5,
    frames: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The monitoring report of the model ``uri`` over a window of the log (a JSON-ready dict).

    ``frames``, when given, receives the reference and current inputs (``reference``,
    ``current``) and predictions, for :func:`molen.monitor.html.report_html`."""
    import pandas as pd

    from molen.models.package import read_file, read_manifest
    from molen.models.signature import Signature
    from molen.monitor.drift import drift_report
    from molen.registry.service import resolve

    found = resolve(uri, workspace=workspace)
    manifest = read_manifest(workspace.objects, found.digest)
    name = found.version.name if found.version else manifest.get("name")
    if not name:
        raise InvalidValueError(f"{uri!r} is not a registered model; monitor NAME@ALIAS or NAME/VERSION")
    until = until or datetime.now(timezone.utc)
    since = since or until - (window or timedelta(days=1))
    started = time.perf_counter()
    table = _window_rows(log_root, "predictions", name, since, until)
    report: dict[str, Any] = {
        "model": name,
        "uri": uri,
        "version": found.version.version if found.version else None,
        "window": {"since": since.isoformat(), "until": until.isoformat()},
        "rows": int(table.num_rows),
    }
    if not table.num_rows:
        raise NotFoundError(
            f"no predictions of {name} logged between {since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} "
            f"in {log_root}; widen --window or check serving.prediction_log"
        )
    import pyarrow.compute as pc

    table = table.filter(pc.not_equal(table.column("role"), "shadow"))
    frame = table.drop_columns(["inputs"]).to_pandas()
    struct = table.column("inputs").combine_chunks()
    inputs = pd.DataFrame({field.name: struct.field(i).to_pandas() for i, field in enumerate(struct.type)})
    signature = Signature.from_dict(manifest["signature"])
    reference = pd.read_parquet(io.BytesIO(read_file(workspace.objects, manifest, "reference.parquet")))
    profile = json.loads(read_file(workspace.objects, manifest, "profile.json"))
    features = [n for n in signature.names if n in inputs.columns]
    data = drift_report(reference[features], inputs[features], drift_share=drift_share)
    report["data_drift"] = data.to_dict()
    prediction = None
    if "__prediction__" in reference.columns:
        prediction = drift_report(
            pd.DataFrame({"prediction": reference["__prediction__"]}),
            pd.DataFrame({"prediction": frame["prediction"]}),
        )
        report["prediction_drift"] = prediction.to_dict()
    report["quality"] = _quality(inputs, signature, profile)
    latency = frame["latency_ms"]
    report["volume"] = {
        "rows": len(frame),
        "versions": sorted(str(v) for v in frame["version"].unique()),
        "latency_ms_p50": float(latency.quantile(0.5)),
        "latency_ms_p95": float(latency.quantile(0.95)),
    }
    feedback = _window_rows(
        log_root, "feedback", name, since - timedelta(days=30), until + timedelta(days=30)
    )
    if feedback.num_rows:
        truth = (
            feedback.to_pandas().drop_duplicates("request_id", keep="last").set_index("request_id")["truth"]
        )
        joined = frame.set_index("request_id").join(truth, how="inner")
        report["performance"] = {
            "feedback_rows": len(joined),
            "coverage": float(len(joined) / len(frame)),
            "metrics": _performance(
                joined["prediction"], joined["truth"], manifest.get("task") == "classification"
            )
            if len(joined)
            else {},
            "training_metrics": manifest.get("metrics") or {},
        }
    else:
        report["performance"] = {"feedback_rows": 0, "coverage": 0.0, "metrics": {}}
    drifted = [c["column"] for c in report["data_drift"]["columns"] if c["drifted"]]
    if data.dataset_drift or (prediction is not None and prediction.dataset_drift):
        status = "alert"
    elif drifted or report["quality"]:
        status = "warning"
    else:
        status = "ok"
    report["status"] = status
    report["seconds"] = round(time.perf_counter() - started, 3)
    if frames is not None:
        frames["reference"] = reference[features]
        frames["current"] = inputs[features]
        if "__prediction__" in reference.columns:
            frames["reference_prediction"] = reference["__prediction__"]
            frames["current_prediction"] = frame["prediction"]
    return report

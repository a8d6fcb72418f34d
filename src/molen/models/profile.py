"""The reference profile of a model's training data, computed once when the model is logged.

Per feature: counts, missing values, and for numbers the mean, spread, quantiles and a
histogram; for text the most frequent values; and the bins drift is measured on
(:mod:`molen.models.bins`). The same for the target and for the model's own
predictions on the reference sample. Monitoring compares live traffic against this profile and
against the reference sample (``reference.parquet``, at most :data:`SAMPLE_ROWS` rows) stored
beside it.
"""

from __future__ import annotations

import io
import math
from typing import Any

from molen.models.bins import column_bins

__all__ = ["SAMPLE_ROWS", "column_profile", "profile_frame", "reference_sample", "sample_parquet"]

SAMPLE_ROWS = 5000
HISTOGRAM_BINS = 20
TOP_VALUES = 50
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
TARGET = "__target__"
PREDICTION = "__prediction__"


def _number(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


def column_profile(series: Any) -> dict[str, Any]:
    """Statistics of one column (a pandas Series), JSON-ready."""
    import numpy as np

    count = len(series)
    missing = int(series.isna().sum())
    found: dict[str, Any] = {"count": count, "missing": missing}
    if count > missing and series.dtype.kind != "M":
        found["bins"] = column_bins(str(series.name), series).to_dict()
    kind = series.dtype.kind
    if kind in "iufb" and str(series.dtype) != "category":
        values = series.dropna().to_numpy(dtype="float64")
        found["kind"] = "numeric"
        if values.size == 0:
            return found
        found.update(
            mean=_number(values.mean()),
            std=_number(values.std()),
            min=_number(values.min()),
            max=_number(values.max()),
            quantiles={
                str(q): _number(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)
            },
        )
        counts, edges = np.histogram(values, bins=HISTOGRAM_BINS)
        found["histogram"] = {"edges": [float(edge) for edge in edges], "counts": counts.tolist()}
        return found
    if kind == "M":
        present = series.dropna()
        found["kind"] = "datetime"
        if len(present):
            found.update(min=present.min().isoformat(), max=present.max().isoformat())
        return found
    found["kind"] = "categorical"
    frequencies = series.dropna().astype(str).value_counts()
    found["distinct"] = len(frequencies)
    top = frequencies.iloc[:TOP_VALUES]
    found["top"] = [{"value": str(value), "count": int(n)} for value, n in top.items()]
    found["other"] = int(frequencies.iloc[TOP_VALUES:].sum())
    return found


def profile_frame(frame: Any, *, target: Any = None, predictions: Any = None) -> dict[str, Any]:
    """The profile of every column of ``frame``, plus the target and predictions when given."""
    import pandas as pd

    found: dict[str, Any] = {
        "rows": len(frame),
        "features": {str(name): column_profile(frame[name]) for name in frame.columns},
    }
    if target is not None:
        found["target"] = column_profile(pd.Series(target))
    if predictions is not None:
        found["prediction"] = column_profile(pd.Series(predictions))
    return found


def reference_sample(frame: Any, target: Any = None, *, rows: int = SAMPLE_ROWS) -> tuple[Any, Any]:
    """At most ``rows`` rows of ``frame`` (and the matching target), drawn reproducibly."""
    import numpy as np
    import pandas as pd

    if len(frame) <= rows:
        return frame.reset_index(drop=True), None if target is None else pd.Series(target).reset_index(
            drop=True
        )
    chosen = np.sort(np.random.default_rng(0).choice(len(frame), size=rows, replace=False))
    sample = frame.iloc[chosen].reset_index(drop=True)
    picked = None if target is None else pd.Series(target).iloc[chosen].reset_index(drop=True)
    return sample, picked


def sample_parquet(sample: Any, target: Any = None, predictions: Any = None) -> bytes:
    """The reference sample as Parquet bytes, target and predictions as extra columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = sample.copy()
    if target is not None:
        frame[TARGET] = list(target)
    if predictions is not None:
        frame[PREDICTION] = list(predictions)
    frame.columns = [str(name) for name in frame.columns]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, compression="zstd")
    return buffer.getvalue()

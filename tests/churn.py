"""The churn-like data and pipeline the model, registry, serving and deployment tests share."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def churn_data(rows: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Tenure (whole months), charges, plan (basic/pro/max); churned = short tenure on basic."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, rows),
            "charges": rng.normal(70.0, 20.0, rows),
            "plan": rng.choice(["basic", "pro", "max"], rows),
        }
    )
    return frame, ((frame["tenure"] < 20) & (frame["plan"] == "basic")).astype(int)


def churn_pipeline(model: Any = None) -> Pipeline:
    """Scaled numbers and one-hot plans before ``model`` (default: a small random forest)."""
    return Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("numbers", StandardScaler(), ["tenure", "charges"]),
                        ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
                    ]
                ),
            ),
            ("model", model or RandomForestClassifier(n_estimators=20, random_state=0)),
        ]
    )

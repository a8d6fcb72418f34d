"""Model quality from counts: realized metrics from feedback, and estimated metrics from the
model's own confidence when feedback is late or missing.

Realized classifier metrics come from confusion counts and, for ROC AUC, from histograms of the
positive class's probability split by the true label (100 bins: the AUC of the binned scores,
within a few thousandths of the exact one). Regression metrics come from five sums.

The estimate is confidence-based performance estimation (CBPE): a calibration map, fitted on the
model's reference sample (isotonic regression of "was it right" on the model's score), turns
each live score into the chance the answer is right, and the expected confusion matrix gives the
expected accuracy, precision, recall, F1 and ROC AUC. It is only as good as the calibration: it
assumes the relation between score and correctness holds in production (no concept drift), so
reports show it apart from the realized numbers and compare the two once feedback arrives.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "PROBABILITY_BINS",
    "Calibration",
    "classification_metrics",
    "estimate",
    "normal_label",
    "regression_metrics",
]

#: Histogram resolution of probabilities (performance estimation and ROC AUC from counts).
PROBABILITY_BINS = 100


def normal_label(value: Any) -> str:
    """A label as text, ``1.0`` and ``1`` alike (truth and prediction may be logged as
    different types)."""
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _f1(tp: float, fp: float, fn: float) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _auc(positive: Any, negative: Any) -> float | None:
    """ROC AUC of scores binned in ascending order: P(positive > negative), ties counted half."""
    import numpy as np

    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if pos.sum() <= 0 or neg.sum() <= 0:
        return None
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def classification_metrics(
    confusion: dict[tuple[str, str], int], positive: str | None, histogram: tuple[Any, Any] | None = None
) -> dict[str, float]:
    """Accuracy from ``{(prediction, truth): rows}``; precision, recall and F1 of the ``positive``
    class for a binary model; ROC AUC from ``histogram`` (positive-class score counts of the
    positive and of the negative rows)."""
    total = sum(confusion.values())
    if not total:
        return {}
    right = sum(n for (predicted, truth), n in confusion.items() if predicted == truth)
    found = {"accuracy": right / total}
    if positive is not None:
        tp = sum(n for (p, t), n in confusion.items() if p == positive and t == positive)
        fp = sum(n for (p, t), n in confusion.items() if p == positive and t != positive)
        fn = sum(n for (p, t), n in confusion.items() if p != positive and t == positive)
        found.update(_f1(tp, fp, fn))
        if histogram is not None:
            auc = _auc(*histogram)
            if auc is not None:
                found["roc_auc"] = auc
    return found


def regression_metrics(
    rows: int, abs_sum: float, sq_sum: float, y_sum: float, y2_sum: float
) -> dict[str, float]:
    """MAE, RMSE and R² from the sums of |error|, error², truth and truth²."""
    if not rows:
        return {}
    found = {"mae": abs_sum / rows, "rmse": (sq_sum / rows) ** 0.5}
    spread = y2_sum - y_sum * y_sum / rows
    if spread > 0:
        found["r2"] = 1 - sq_sum / spread
    return found


class Calibration(NamedTuple):
    """Score → chance of being right (binary: of the positive class), fitted on the reference."""

    thresholds: tuple[float, ...]
    values: tuple[float, ...]
    binary: bool

    @classmethod
    def fit(cls, scores: Any, outcomes: Any, *, binary: bool) -> Calibration:
        """Isotonic regression of ``outcomes`` (0/1) on ``scores``."""
        import numpy as np
        from sklearn.isotonic import IsotonicRegression

        fitted = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
            np.asarray(scores, dtype=float), np.asarray(outcomes, dtype=float)
        )
        return cls(
            tuple(float(x) for x in fitted.X_thresholds_),
            tuple(float(y) for y in fitted.y_thresholds_),
            binary,
        )

    def __call__(self, scores: Any) -> Any:
        import numpy as np

        return np.interp(np.asarray(scores, dtype=float), self.thresholds, self.values)


def estimate(counts: Any, calibration: Calibration) -> dict[str, float]:
    """Expected metrics of rows whose scores fall in ``len(counts)`` equal bins of [0, 1].

    Binary: the score is the positive class's probability, the answer is positive from 0.5 on,
    and the calibrated chance ``c`` of each bin splits its rows into expected true and false
    positives (or negatives). Multiclass: the score is the answer's probability and only the
    expected accuracy is given."""
    import numpy as np

    rows = np.asarray(counts, dtype=float)
    total = rows.sum()
    if total <= 0:
        return {}
    centres = (np.arange(len(rows)) + 0.5) / len(rows)
    chance = calibration(centres)
    if not calibration.binary:
        return {"accuracy": float((rows * chance).sum() / total)}
    answered_positive = centres >= 0.5
    tp = float((rows * chance)[answered_positive].sum())
    fp = float((rows * (1 - chance))[answered_positive].sum())
    fn = float((rows * chance)[~answered_positive].sum())
    tn = float((rows * (1 - chance))[~answered_positive].sum())
    found = {"accuracy": (tp + tn) / total, **_f1(tp, fp, fn)}
    auc = _auc(rows * chance, rows * (1 - chance))
    if auc is not None:
        found["roc_auc"] = auc
    return found

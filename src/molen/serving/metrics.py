"""What ``GET /metrics`` reports, in Prometheus' text format (prometheus_client).

Each server keeps its own registry; with ``--workers N`` each worker answers for itself (scrape
them through the Service, or run one worker per pod, as the generated Kubernetes manifests do).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerMetrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServerMetrics:
    """Requests, errors, latency, rows, prediction distribution, model version, dropped log rows."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series: noise

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "molen_requests",
            "Requests answered, by route and status code.",
            ("route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "molen_request_seconds",
            "Time to answer a prediction request, by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "molen_rows_predicted",
            "Rows predicted, by model version and role.",
            ("version", "role"),
            registry=self.registry,
        )
        self.classes = Counter(
            "molen_predictions_by_class",
            "Predicted rows per class (classifiers).",
            ("version", "label"),
            registry=self.registry,
        )
        self.values = Histogram(
            "molen_prediction_value",
            "Predicted values (regressors).",
            ("version",),
            buckets=(-1e6, -1e3, -100, -10, -1, 0, 1, 10, 100, 1e3, 1e6),
            registry=self.registry,
        )
        self.info = Gauge(
            "molen_model_info",
            "The model version serving (1), by role.",
            ("model", "version", "alias", "role"),
            registry=self.registry,
        )
        self.dropped = Gauge(
            "molen_log_rows_dropped",
            "Prediction log rows dropped (full buffer or failing sink).",
            registry=self.registry,
        )
        self.shadow_skipped = Counter(
            "molen_shadow_rows_skipped",
            "Rows the shadow challenger skipped because it fell behind.",
            registry=self.registry,
        )
        self.explain_skipped = Counter(
            "molen_explain_rows_skipped",
            "Rows left unexplained because --explain-log fell behind.",
            registry=self.registry,
        )
        self.log_written = Gauge(
            "molen_log_rows_written",
            "Prediction log rows written.",
            registry=self.registry,
        )

        self.drift_rows = Gauge(
            "molen_drift_rows",
            "Rows in the last drift period (molen serve --drift-every).",
            registry=self.registry,
        )
        self.feature_drift = Gauge(
            "molen_feature_drift",
            "Drift statistic of the last period against the reference bins, by feature and method "
            "(chisquare: p-value, drift when < 0.05; jensenshannon: distance, drift when >= 0.1).",
            ("feature", "method"),
            registry=self.registry,
        )
        self.feature_psi = Gauge(
            "molen_feature_psi",
            "Population stability index of the last period, by feature.",
            ("feature",),
            registry=self.registry,
        )
        self.feature_drifted = Gauge(
            "molen_feature_drifted",
            "1 when the feature drifted in the last period.",
            ("feature",),
            registry=self.registry,
        )
        self.drifted_share = Gauge(
            "molen_drifted_share",
            "Share of input features that drifted in the last period.",
            registry=self.registry,
        )
        self.drift_skipped = Counter(
            "molen_drift_rows_skipped",
            "Rows left out of the drift gauges because counting fell behind.",
            registry=self.registry,
        )

    def predicted(self, version: str, role: str, predictions: Any, classifier: bool) -> None:
        """Count the rows and the distribution of ``predictions``."""
        import numpy as np

        self.rows.labels(version, role).inc(len(predictions))
        if classifier:
            labels, counts = np.unique(predictions, return_counts=True)
            for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
                self.classes.labels(version, str(label)).inc(count)
        elif len(predictions) <= 64:
            observe = self.values.labels(version).observe
            for value in np.asarray(predictions, dtype=float).tolist():
                observe(value)

    def render(self) -> bytes:
        """The text exposition."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

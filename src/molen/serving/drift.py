"""Drift on the server: ``molen serve --drift-every 5m`` exports, per feature, the drift of the
last period's traffic against the served model's reference bins as Prometheus gauges.

The request path only appends the batch it already built for the log to a bounded queue. A
background thread wakes once per period, counts the queued rows into the bins of the version
that answered them (:mod:`molen.models.bins`, a NumPy search per column), judges each feature
with the ``molen`` preset (:func:`molen.monitor.drift.compare_counts`) and sets the gauges;
the next period starts from zero counts (tumbling windows). When the queue is full (the counter
thread fell behind) rows are skipped and counted, never queued without end.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from molen.models.bins import Bins
    from molen.models.predictor import Predictor
    from molen.serving.metrics import ServerMetrics
    from molen.serving.predlog import PredictionBatch

__all__ = ["DriftWatch"]

log = logging.getLogger("molen.serving")
#: Rows waiting to be counted at most (beyond, rows are skipped and counted as skipped).
QUEUE_ROWS = 1_000_000


class DriftWatch:
    """Counts served rows into reference bins and publishes drift gauges every ``interval`` s."""

    def __init__(self, metrics: ServerMetrics, interval: float, *, objects: Any = None) -> None:
        self.metrics = metrics
        self.interval = interval
        self.objects = objects
        self._queue: deque[tuple[Predictor, PredictionBatch]] = deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bins: dict[str, dict[str, Bins]] = {}
        self._thread = threading.Thread(target=self._run, name="molen-drift", daemon=True)
        self._thread.start()

    def add(self, model: Predictor, batch: PredictionBatch) -> None:
        """Queue an answered batch (never blocks, never raises)."""
        rows = len(batch.ids)
        with self._lock:
            if self._queued + rows > QUEUE_ROWS:
                self.metrics.drift_skipped.inc(rows)
                return
            self._queue.append((model, batch))
            self._queued += rows

    def _bins_of(self, model: Predictor) -> dict[str, Bins]:
        if model.digest not in self._bins:
            self._bins[model.digest] = self._read_bins(model)
        return self._bins[model.digest]

    def _read_bins(self, model: Predictor) -> dict[str, Bins]:
        import json

        from molen.models.bins import bins_from_profile
        from molen.models.package import read_file

        if self.objects is None or "profile.json" not in model.manifest.get("files", {}):
            return {}
        return bins_from_profile(json.loads(read_file(self.objects, model.manifest, "profile.json")))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish()
            except Exception as exc:  # gauges are a convenience: never stop serving over them
                log.warning("drift gauges: %s", exc)

    def publish(self) -> None:
        """Count what was queued since the last period and set the gauges."""
        import numpy as np

        from molen.monitor.drift import compare_counts

        with self._lock:
            taken, self._queue, self._queued = self._queue, deque(), 0
        counts: dict[str, Any] = {}
        bins_used: dict[str, Bins] = {}
        rows = 0
        for model, batch in taken:
            bins = self._bins_of(model)
            rows += len(batch.ids)
            for index, name in enumerate(batch.names):
                if name not in bins:
                    continue
                found = bins[name].count(batch.column(index))
                if name in counts and len(counts[name]) == len(found):
                    counts[name] += found
                else:
                    counts[name] = found.astype(np.int64)
                bins_used[name] = bins[name]
            if "__prediction__" in bins:
                found = bins["__prediction__"].count(np.asarray(batch.predictions))
                previous = counts.get("__prediction__")
                counts["__prediction__"] = (
                    found if previous is None or len(previous) != len(found) else previous + found
                )
                bins_used["__prediction__"] = bins["__prediction__"]
        self.metrics.drift_rows.set(rows)
        if not rows:  # nothing measured: the last verdicts stay (molen_drift_rows says 0)
            return
        drifted = total = 0
        self.metrics.feature_drift.clear()
        for name, found in counts.items():
            if not found.sum():
                continue
            verdict = compare_counts(bins_used[name], found)
            label = "prediction" if name == "__prediction__" else name
            self.metrics.feature_drift.labels(label, verdict.method).set(verdict.statistic)
            self.metrics.feature_psi.labels(label).set(verdict.psi)
            self.metrics.feature_drifted.labels(label).set(1.0 if verdict.drifted else 0.0)
            if name != "__prediction__":
                total += 1
                drifted += verdict.drifted
        if total:
            self.metrics.drifted_share.set(drifted / total)

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(timeout=5)

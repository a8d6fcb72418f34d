"""The serving service, with no web framework: which model answers, the answer, the log.

A :class:`ServedModel` is a model URI that may follow an alias: :meth:`ServedModel.refresh`
asks the registry where the alias points and, when it moved, loads the new version and swaps
it in with one reference assignment. A request takes the reference once, at its start, so
in-flight requests finish on the version they started with and no request is dropped.

:class:`ModelServer` answers: it picks the champion or (for a canary's share, sticky per client
key) the challenger, checks the input against the signature, predicts, queues the rows for the
prediction log, counts them for ``/metrics``, and hands a copy to a shadow challenger on a
separate thread after the champion has answered.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.errors import InvalidValueError, UsageError
from molen.serving.predlog import PredictionBatch

if TYPE_CHECKING:
    from molen.models.predictor import Predictor
    from molen.serving.metrics import ServerMetrics
    from molen.serving.predlog import PredictionLog
    from molen.workspace import Workspace

__all__ = ["Answer", "ModelServer", "ServedModel", "parse_canary"]

log = logging.getLogger("molen.serving")

#: Requests a shadow challenger may fall behind by before its copies are skipped (and counted).
SHADOW_BACKLOG = 256


class ServedModel:
    """A model URI (``churn@production``, ``churn/3``) and the version loaded for it now."""

    def __init__(self, uri: str, workspace: Workspace, *, role: str) -> None:
        from molen.registry.service import parse_model_uri

        self.uri = uri
        self.ref = parse_model_uri(uri)
        if self.ref.kind == "run":
            raise UsageError(f"serve a registered model (NAME@ALIAS or NAME/VERSION), not {uri!r}")
        self.workspace = workspace
        self.role = role
        self.name = self.ref.name
        self.alias = (
            self.ref.alias if self.ref.kind == "alias" else ("latest" if self.ref.kind == "latest" else None)
        )
        self.current: Predictor = self._load()
        self.loaded_at = time.time()

    def _load(self) -> Predictor:
        from molen.registry.service import load_model

        return load_model(self.uri, workspace=self.workspace)

    @property
    def version(self) -> str:
        return str(self.current.version)

    def refresh(self) -> bool:
        """Follow the alias: load and swap in the version it points at now; True if it moved."""
        if self.alias is None:
            return False
        from molen.registry.service import resolve

        found = resolve(self.ref, workspace=self.workspace)
        if found.version is None or found.version.version == self.current.version:
            return False
        new = self._load()  # loaded aside; requests keep using the old one meanwhile
        old = self.current
        self.current = new
        self.loaded_at = time.time()
        log.warning("%s moved: version %s → %s", self.uri, old.version, new.version)
        return True


def parse_canary(text: str) -> tuple[str, float]:
    """``churn@staging:10`` → (``churn@staging``, 0.10)."""
    uri, _, share = text.rpartition(":")
    try:
        percent = float(share)
    except ValueError:
        percent = -1.0
    if not uri or not 0 < percent <= 100:
        raise UsageError(f"--canary {text!r}: give MODEL:PERCENT, as in churn@staging:10")
    return uri, percent / 100


class Answer(NamedTuple):
    """What a prediction request gets back."""

    model: str
    version: str
    role: str
    request_id: str
    ids: list[str]
    predictions: Any
    probabilities: Any | None
    classes: list[Any] | None


class ModelServer:
    """Answers prediction requests for one model (and an optional challenger)."""

    def __init__(
        self,
        champion: ServedModel,
        *,
        metrics: ServerMetrics,
        prediction_log: PredictionLog | None = None,
        shadow: ServedModel | None = None,
        canary: ServedModel | None = None,
        canary_share: float = 0.0,
        explain_log: bool = False,
        drift_every: float = 0.0,
    ) -> None:
        if shadow is not None and canary is not None:
            raise UsageError("use --shadow or --canary, not both")
        self.champion = champion
        self.shadow = shadow
        self.canary = canary
        self.canary_share = canary_share
        self.metrics = metrics
        self.log = prediction_log
        self.started = time.time()
        self._shadow_pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="molen-shadow") if shadow else None
        )
        if explain_log and prediction_log is None:
            raise UsageError("--explain-log needs the prediction log (drop --no-log)")
        self._explain_pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="molen-explain") if explain_log else None
        )
        self.drift = None
        if drift_every > 0:
            from molen.serving.drift import DriftWatch

            self.drift = DriftWatch(metrics, drift_every, objects=champion.workspace.objects)
        self._explain_backlog = 0
        self._counter = 0
        self._shadow_backlog = 0
        self._lock = threading.Lock()
        self._publish_info()

    @property
    def name(self) -> str:
        return self.champion.name

    def _publish_info(self) -> None:
        self.metrics.info.clear()
        for served in (self.champion, self.shadow, self.canary):
            if served is not None:
                self.metrics.info.labels(served.name, served.version, served.alias or "", served.role).set(1)

    def refresh(self) -> bool:
        """Follow the aliases of every served model; True if any moved."""
        moved = False
        for served in (self.champion, self.shadow, self.canary):
            if served is not None:
                try:
                    moved = served.refresh() or moved
                except Exception as exc:  # a registry hiccup must not stop serving the loaded model
                    log.warning("could not check %s: %s", served.uri, exc)
        if moved:
            self._publish_info()
        return moved

    def _pick(self, key: str | None) -> tuple[ServedModel, str]:
        if self.canary is None:
            return self.champion, "champion"
        if key is not None:
            digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
            point = int.from_bytes(digest, "big") / 2**64
        else:
            with self._lock:
                self._counter += 1
                point = (self._counter * 0.6180339887498949) % 1.0  # evenly spread, no RNG
        if point < self.canary_share:
            return self.canary, "canary"
        return self.champion, "champion"

    def answer(
        self,
        data: Any,
        *,
        ids: list[str] | None = None,
        key: str | None = None,
        request_id: str | None = None,
        probabilities: bool = True,
    ) -> Answer:
        """Predict the rows of ``data``; raises :class:`InputSchemaError` for input that does
        not fit the signature (nothing is logged then)."""
        started = time.perf_counter()
        served, role = self._pick(key)
        model = served.current  # one reference for the whole request: an alias move cannot split it
        given, inputs = model.prepare(data)
        if probabilities:
            predictions, proba = model.predict_both_prepared(given)
        else:
            predictions, proba = model.predict_prepared(given), None
        latency_ms = (time.perf_counter() - started) * 1000
        request_id = request_id or uuid.uuid4().hex
        rows = len(predictions)
        if ids is None:
            ids = [request_id] if rows == 1 else [f"{request_id}-{index}" for index in range(rows)]
        version = str(model.version)
        if self.log is not None or self.drift is not None:
            batch = PredictionBatch(
                model.signature.names, inputs, ids, version, role, latency_ms, predictions, proba
            )
            if self.log is not None:
                self.log.append("predictions", served.name, batch, rows)
            if self.drift is not None:
                self.drift.add(model, batch)
        self.metrics.predicted(version, role, predictions, model.task == "classification")
        if self._shadow_pool is not None and self.shadow is not None:
            with self._lock:
                behind = self._shadow_backlog >= SHADOW_BACKLOG
                if not behind:
                    self._shadow_backlog += 1
            if behind:  # the challenger cannot keep up: skip it rather than queue without end
                self.metrics.shadow_skipped.inc(rows)
            else:
                self._shadow_pool.submit(self._shadow_answer, inputs, ids)
        if self._explain_pool is not None:
            with self._lock:
                behind = self._explain_backlog >= SHADOW_BACKLOG
                if not behind:
                    self._explain_backlog += 1
            if behind:  # explanations cannot keep up: skip (counted) rather than queue without end
                self.metrics.explain_skipped.inc(rows)
            else:
                self._explain_pool.submit(self._explain_answer, served.name, model, inputs, ids)
        return Answer(served.name, version, role, request_id, ids, predictions, proba, model.classes)

    def _explain_answer(self, name: str, model: Predictor, inputs: Any, ids: list[str]) -> None:
        """Attributions for answered rows, into the log's ``explanations`` (after the answer)."""
        from molen.serving.predlog import utc_now

        try:
            import pandas as pd

            data = inputs if hasattr(inputs, "iloc") else pd.DataFrame(inputs, columns=model.signature.names)
            from molen.explain.shapley import explain

            explanation = explain(model, data)
            now = utc_now()
            rows = [
                {
                    "request_id": request_id,
                    "timestamp": now,
                    "version": str(model.version),
                    "explainer": explanation.explainer,
                    "output_kind": explanation.output,
                    "base_value": row["base_value"],
                    "output": row["output"],
                    "attributions": row["attributions"],
                }
                for request_id, row in zip(ids, explanation.rows(), strict=True)
            ]
            if self.log is not None:
                self.log.append("explanations", name, rows, len(rows))
        except Exception as exc:  # an explanation that fails must never touch serving
            log.warning("explaining %s failed: %s", ids[0] if ids else "?", exc)
        finally:
            with self._lock:
                self._explain_backlog -= 1

    def _shadow_answer(self, inputs: Any, ids: list[str]) -> None:
        try:
            self._shadow_work(inputs, ids)
        finally:
            with self._lock:
                self._shadow_backlog -= 1

    def _shadow_work(self, inputs: Any, ids: list[str]) -> None:
        assert self.shadow is not None
        model = self.shadow.current
        champion = self.champion.current.signature.names
        try:
            started = time.perf_counter()
            data = inputs if hasattr(inputs, "iloc") else dict(zip(champion, inputs.T, strict=True))
            given, checked = model.prepare(data)
            predictions, proba = model.predict_both_prepared(given)
            latency_ms = (time.perf_counter() - started) * 1000
        except Exception as exc:  # the challenger's failures are its own: logged, never returned
            log.warning("shadow %s failed: %s", self.shadow.uri, exc)
            return
        version = str(model.version)
        if self.log is not None:
            self.log.append(
                "predictions",
                self.shadow.name,
                PredictionBatch(
                    model.signature.names, checked, ids, version, "shadow", latency_ms, predictions, proba
                ),
                len(ids),
            )
        self.metrics.predicted(version, "shadow", predictions, model.task == "classification")

    def feedback(self, items: list[dict[str, Any]]) -> int:
        """Store ground truth for earlier request ids; returns how many were taken."""
        from molen.serving.predlog import utc_now

        if not items:
            raise InvalidValueError('send {"request_id": ..., "truth": ...} or a list of them')
        now = utc_now()
        rows = []
        for number, item in enumerate(items):
            if not isinstance(item, dict) or "request_id" not in item or "truth" not in item:
                raise InvalidValueError(f"feedback item {number} needs request_id and truth")
            truth = item["truth"]
            if not isinstance(truth, (str, int, float, bool)) or truth is None:
                raise InvalidValueError(f"feedback item {number}: truth must be a number, text or true/false")
            rows.append({"request_id": str(item["request_id"]), "timestamp": now, "truth": str(truth)})
        if self.log is None:
            raise UsageError(
                "this server keeps no prediction log (started with --no-log): feedback has nowhere to go"
            )
        self.log.append("feedback", self.name, rows, len(rows))
        return len(rows)

    def health(self) -> dict[str, Any]:
        """Name, version, alias, uptime, and the challenger if any."""
        found: dict[str, Any] = {
            "status": "ok",
            "model": self.champion.name,
            "version": self.champion.version,
            "alias": self.champion.alias,
            "uptime_s": round(time.time() - self.started, 1),
            "loaded_at": self.champion.loaded_at,
        }
        if self.shadow is not None:
            found["shadow"] = {"uri": self.shadow.uri, "version": self.shadow.version}
        if self.canary is not None:
            found["canary"] = {
                "uri": self.canary.uri,
                "version": self.canary.version,
                "share": self.canary_share,
            }
        return found

    def close(self) -> None:
        """Finish the shadow and explanation work and flush the log."""
        if self._shadow_pool is not None:
            self._shadow_pool.shutdown(wait=True)
        if self._explain_pool is not None:
            self._explain_pool.shutdown(wait=True)
        if self.drift is not None:
            self.drift.close()
        if self.log is not None:
            self.log.close()

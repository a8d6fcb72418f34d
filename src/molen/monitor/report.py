"""``molen monitor``: is the served model still working? A report over a window of the
prediction log, against the reference the model carries.

The log is read with SQL aggregates (:class:`molen.monitor.logquery.LogQuery`), per time bucket
(an hour, or a day for windows of two days and more): rows and latency, counts per drift bin of
every input and of the predictions, data-quality counts against the signature and the profile,
confusion counts of the rows with feedback, and a histogram of the model's confidence. The
reference side is the binned profile stored with the model (or, with ``reference_since``, an
earlier window of the log), so nothing of it is recomputed. From those counts come the window's
drift (:mod:`molen.monitor.drift`), the same per bucket (the timeline), realized performance per
bucket with its feedback coverage, and the estimate from confidence
(:mod:`molen.monitor.performance`), kept apart and checked against the realized numbers.

The status is ``ok`` (exit 0), ``warning`` (1: a feature or the predictions drifted, or a
quality check failed) or ``alert`` (2: the dataset drifted, or an alert rule of ``molen.yaml``
fired; ``when: prediction_drift > 0`` makes drifting predictions an alert too).
"""

from __future__ import annotations

import io
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from molen.errors import InvalidValueError, NotFoundError

if TYPE_CHECKING:
    from molen.models.bins import Bins
    from molen.monitor.drift import DriftConfig
    from molen.monitor.logquery import LogQuery
    from molen.workspace import Workspace

__all__ = ["STATUS_CODES", "drift_config_of", "monitor", "parse_time", "parse_window", "workspace_report"]

STATUS_CODES = {"ok": 0, "warning": 1, "alert": 2}
#: A quality check fails when more than this share of the window's rows break it.
QUALITY_SHARE = 0.01
#: Rows of the log a reference window or the ``evidently`` preset reads (a reservoir sample beyond).
SAMPLE_ROWS = 1_000_000
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_window(text: str, option: str = "--window") -> timedelta:
    """``30m``, ``12h``, ``1d``, ``2w`` as a duration."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", text)
    if not found or float(found.group(1)) <= 0:
        raise InvalidValueError(f"{option} {text!r}: use a positive number and m, h, d or w, as in 1d or 12h")
    return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])


def parse_time(text: str, option: str) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise), or a duration ago (``7d``)."""
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*[mhdw]\s*", text):
        return datetime.now(timezone.utc) - parse_window(text, option)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidValueError(
            f"{option} {text!r}: use a date or time such as 2026-11-20 or 2026-11-20T08:00, "
            "or 7d for 7 days ago"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _field(name: str) -> str:
    return 'inputs."' + name.replace('"', '""') + '"'


def _sql_text(values: Any) -> str:
    return "[" + ", ".join("'" + str(v).replace("'", "''") + "'" for v in values) + "]::VARCHAR[]"


class _Model:
    """What the report needs of the model version: manifest, signature, profile, reference."""

    def __init__(self, uri: str, workspace: Workspace) -> None:
        import pandas as pd

        from molen.models.package import read_file, read_manifest
        from molen.models.signature import Signature
        from molen.registry.service import resolve

        found = resolve(uri, workspace=workspace)
        self.manifest = read_manifest(workspace.objects, found.digest)
        name = found.version.name if found.version else self.manifest.get("name")
        if not name:
            raise InvalidValueError(f"{uri!r} is not a registered model; monitor NAME@ALIAS or NAME/VERSION")
        self.name: str = str(name)
        self.version = found.version.version if found.version else None
        self.signature = Signature.from_dict(self.manifest["signature"])
        files = self.manifest.get("files", {})
        if "reference.parquet" not in files or "profile.json" not in files:
            raise NotFoundError(
                f"{uri} was logged without reference data; "
                "log it with log_model(..., reference=X_train) to monitor it"
            )
        self.reference = pd.read_parquet(
            io.BytesIO(read_file(workspace.objects, self.manifest, "reference.parquet"))
        )
        self.profile = json.loads(read_file(workspace.objects, self.manifest, "profile.json"))
        self.classes = [str(c) for c in self.manifest.get("classes") or []]
        self.classifier = self.manifest.get("task") == "classification"
        self.uri = uri
        self.workspace = workspace

    def bins(self, features: list[str]) -> dict[str, Bins]:
        """The stored bins, or bins of the reference sample for a profile that has none."""
        from molen.models.bins import bins_from_frame, bins_from_profile, column_bins
        from molen.models.profile import PREDICTION

        stored = bins_from_profile(self.profile)
        missing = [name for name in features if name not in stored and name in self.reference.columns]
        stored.update(bins_from_frame(self.reference, missing))
        if "__prediction__" not in stored and PREDICTION in self.reference.columns:
            stored["__prediction__"] = column_bins("__prediction__", self.reference[PREDICTION])
        return stored

    def calibration(self) -> Any:
        """The confidence calibration, fitted on the reference sample (None when the model gives
        no probabilities or the reference has no target)."""
        import numpy as np

        from molen.models.profile import TARGET
        from molen.monitor.performance import Calibration, normal_label
        from molen.registry.service import load_model

        if not self.classifier or TARGET not in self.reference.columns or len(self.classes) < 2:
            return None
        predictor = load_model(self.uri, workspace=self.workspace)  # this project's, wherever the cwd is
        if not hasattr(predictor.model, "predict_proba"):
            return None
        probabilities = np.asarray(predictor.predict_proba(self.reference[self.signature.names]))
        truth = np.array([normal_label(v) for v in self.reference[TARGET]])
        classes = np.array([normal_label(c) for c in self.classes])
        if len(self.classes) == 2:
            return Calibration.fit(probabilities[:, 1], truth == classes[1], binary=True)
        answered = classes[probabilities.argmax(axis=1)]
        return Calibration.fit(probabilities.max(axis=1), answered == truth, binary=False)


def drift_config_of(workspace: Workspace) -> DriftConfig:
    """The drift settings of the workspace's project (``monitor.drift`` in molen.yaml)."""
    from molen.config import project_config
    from molen.monitor.drift import DriftConfig

    project = workspace.settings.project
    return DriftConfig.from_config(project_config(project)) if project is not None else DriftConfig()


def workspace_report(
    uri: str, workspace: Workspace, *, drift: DriftConfig | None = None, **options: Any
) -> dict[str, Any]:
    """:func:`monitor` over the workspace's prediction log (local or in object storage), with
    its project's drift settings (unless ``drift``) and alert rules applied: what
    ``molen monitor`` and the UI's monitoring page show. ``options`` are :func:`monitor`'s."""
    from molen.monitor.alerts import apply_rules
    from molen.serving.predlog import log_storage_options

    log_root = workspace.settings["serving.prediction_log"]
    report = monitor(
        uri,
        log_root=log_root,
        workspace=workspace,
        drift=drift or drift_config_of(workspace),
        storage_options=log_storage_options(log_root, workspace),
        **options,
    )
    apply_rules(report, workspace)
    return report


def _log_reference(query: LogQuery, features: list[str]) -> dict[str, Bins]:
    """Bins of an earlier window of the log (a reservoir sample of it)."""
    from molen.models.bins import bins_from_frame, column_bins

    sample = query.sample(features, SAMPLE_ROWS)
    if not len(sample):
        raise NotFoundError(
            "the reference window holds no predictions; check --reference-since/--reference-until"
        )
    found = bins_from_frame(sample, features)
    found["__prediction__"] = column_bins("__prediction__", sample["prediction"])
    return found


def _counts(
    rows: list[tuple[Any, ...]], size: int, extra: int
) -> tuple[dict[int, Any], dict[int, list[int]]]:
    """Bin counts per bucket and the extra counts (missing first, then the checks) per bucket."""
    import numpy as np

    counts: dict[int, Any] = defaultdict(lambda: np.zeros(size, dtype=np.int64))
    checks: dict[int, list[int]] = defaultdict(lambda: [0] * (1 + extra))
    for bucket, index, rows_in_bin, *checked in rows:
        if index is None:
            checks[bucket][0] += rows_in_bin
        else:
            counts[bucket][int(index)] += rows_in_bin
        for position, number in enumerate(checked, 1):
            checks[bucket][position] += number
    return counts, checks


def _quality_checks(model: _Model, name: str, expression: str) -> dict[str, str]:
    """SQL conditions of the checks a column gets: unseen categories, values out of range."""
    spec = next(spec for spec in model.signature.inputs if spec.name == name)
    stats = model.profile.get("features", {}).get(name, {})
    checks = {}
    if spec.categories is not None:
        known = _sql_text(spec.categories)
        checks["unseen categories"] = (
            f"{expression} IS NOT NULL AND NOT list_contains({known}, CAST({expression} AS VARCHAR))"
        )
    if spec.type in {"integer", "float"} and "min" in stats and "max" in stats:
        checks["out of training range"] = (
            f"{expression} < {stats['min']!r} OR {expression} > {stats['max']!r}"
        )
    return checks


def _bucket_time(bucket: int, seconds: int) -> str:
    return datetime.fromtimestamp(bucket * seconds, timezone.utc).isoformat()


def monitor(
    uri: str,
    *,
    log_root: str,
    workspace: Workspace,
    window: timedelta | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    every: timedelta | None = None,
    reference_since: datetime | None = None,
    reference_until: datetime | None = None,
    drift: DriftConfig | None = None,
    all_versions: bool = False,
    progress: Callable[[str], None] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The monitoring report of the model ``uri`` over a window of the log (a JSON-ready dict):
    the rows that version answered, or, with ``all_versions``, the rows of every version of the
    model (against this version's reference)."""
    from molen.monitor.drift import DriftConfig, compare_counts, summarize
    from molen.monitor.logquery import LogQuery

    step = progress or (lambda _message: None)
    config = drift or DriftConfig()
    started = time.perf_counter()
    step("reading the model's reference")
    model = _Model(uri, workspace)
    until = until or datetime.now(timezone.utc)
    since = since or until - (window or timedelta(days=1))
    if since >= until:
        raise InvalidValueError(
            f"--since {since:%Y-%m-%d %H:%M} is not before --until {until:%Y-%m-%d %H:%M}"
        )
    bucket_seconds = int(
        (
            every or (timedelta(days=1) if until - since >= timedelta(days=2) else timedelta(hours=1))
        ).total_seconds()
    )
    version = None if all_versions or model.version is None else str(model.version)
    query = LogQuery(
        log_root,
        model.name,
        since,
        until,
        bucket_seconds=bucket_seconds,
        version=version,
        storage_options=storage_options,
        memory_limit=workspace.settings["monitor.memory_limit"],
    )
    try:
        step("counting rows and latency")
        volume = query.volume() if query.has_predictions else []
        if not volume:
            answered = f"{model.name} version {version}" if version else model.name
            raise NotFoundError(
                f"no predictions of {answered} logged between {since:%Y-%m-%d %H:%M} and "
                f"{until:%Y-%m-%d %H:%M} in {log_root}; widen --window"
                + (", add --all-versions" if version else "")
                + " or check serving.prediction_log"
            )
        logged = query.input_fields()
        features = [name for name in model.signature.names if name in logged]
        if reference_since is not None or reference_until is not None:
            step("binning the reference window")
            earlier = LogQuery(
                log_root,
                model.name,
                reference_since or datetime.fromtimestamp(0, timezone.utc),
                reference_until or since,
                bucket_seconds=bucket_seconds,
                storage_options=storage_options,
                memory_limit=workspace.settings["monitor.memory_limit"],
            )
            try:
                bins = _log_reference(earlier, features) if earlier.has_predictions else {}
            finally:
                earlier.close()
            if not bins:
                raise NotFoundError(
                    "the reference window holds no predictions; check --reference-since/--reference-until"
                )
            reference = {
                "source": "log",
                "since": (reference_since.isoformat() if reference_since else None),
                "until": (reference_until or since).isoformat(),
            }
        else:
            bins = model.bins(features)
            reference = {"source": "training", "rows": model.profile.get("rows")}
        buckets = [row[0] for row in volume]
        total_rows = sum(row[1] for row in volume)
        report: dict[str, Any] = {
            "model": model.name,
            "uri": uri,
            "version": model.version,
            "window": {
                "since": since.isoformat(),
                "until": until.isoformat(),
                "every_seconds": bucket_seconds,
            },
            "reference": reference,
            "rows": int(total_rows),
        }
        limits = {**config.thresholds, **config.columns}
        per_bucket: dict[int, list[Any]] = defaultdict(list)
        window_columns = []
        quality = []
        for number, name in enumerate(features, 1):
            step(f"drift of {name} ({number}/{len(features)})")
            expression = _field(name)
            checks = _quality_checks(model, name, expression)
            counts, checked = _counts(
                query.bin_counts(bins[name], expression, checks), bins[name].size, len(checks)
            )
            total = sum(counts.values())
            if isinstance(total, int) or not total.sum():
                continue
            window_columns.append(
                compare_counts(bins[name], total, thresholds=limits, threshold=limits.get(name))
            )
            for bucket, found in counts.items():
                per_bucket[bucket].append(
                    compare_counts(bins[name], found, thresholds=limits, threshold=limits.get(name))
                )
            missing = sum(values[0] for values in checked.values())
            spec = next(spec for spec in model.signature.inputs if spec.name == name)
            if missing / total_rows > QUALITY_SHARE and not spec.nullable:
                quality.append(
                    {"column": name, "check": "missing values", "share": missing / total_rows, "detail": ""}
                )
            for position, (check, condition) in enumerate(checks.items(), 1):
                broken = sum(values[position] for values in checked.values())
                if broken / total_rows <= QUALITY_SHARE:
                    continue
                if check == "unseen categories":
                    detail = ", ".join(query.examples(expression, condition))
                else:
                    stats = model.profile["features"][name]
                    detail = f"training range {stats['min']:.4g} – {stats['max']:.4g}"
                quality.append(
                    {"column": name, "check": check, "share": broken / total_rows, "detail": detail}
                )
        if config.preset == "evidently":
            step("Evidently's decision table on the window's rows")
            from molen.monitor.drift import drift_report

            sample = query.sample(features, SAMPLE_ROWS)
            data = drift_report(
                model.reference[features],
                sample[features],
                preset="evidently",
                thresholds=limits,
                drift_share=config.drift_share,
            )
        else:
            data = summarize(window_columns, config.drift_share, "molen")
        report["data_drift"] = data.to_dict()
        prediction_buckets: dict[int, Any] = {}
        if "__prediction__" in bins:
            step("drift of the predictions")
            counts, _ = _counts(
                query.bin_counts(bins["__prediction__"], "prediction", {}), bins["__prediction__"].size, 0
            )
            total = sum(counts.values())
            if not isinstance(total, int) and total.sum():
                predicted = summarize(
                    [compare_counts(bins["__prediction__"], total)._replace(column="prediction")],
                    0.5,
                    "molen",
                )
                report["prediction_drift"] = predicted.to_dict()
                prediction_buckets = {
                    bucket: compare_counts(bins["__prediction__"], found) for bucket, found in counts.items()
                }
        missing_columns = [
            {"column": name, "check": "schema", "share": 1.0, "detail": "not in the logged inputs"}
            for name in model.signature.names
            if name not in logged
        ]
        report["quality"] = missing_columns + quality
        p50, p95 = query.latency()
        report["volume"] = {
            "rows": int(total_rows),
            "versions": sorted({v for row in volume for v in (row[4] or "").split(",") if v}),
            "latency_ms_p50": p50,
            "latency_ms_p95": p95,
        }
        report["versions"] = [
            {
                "version": str(row[0]),
                "role": str(row[1]),
                "rows": int(row[2]),
                "latency_ms_p50": float(row[3] or 0.0),
                "latency_ms_p95": float(row[4] or 0.0),
                "with_feedback": int(row[5] or 0),
                "accuracy": None if row[6] is None or not model.classifier else float(row[6]),
                "mae": None if row[7] is None or model.classifier else float(row[7]),
                "compared": int(row[8] or 0),
                "agreement": None if row[9] is None else float(row[9]),
            }
            for row in query.versions()
        ]
        step("performance from feedback and confidence")
        realized, joined = _realized(query, model)
        estimated = _estimated(query, model)
        report["performance"] = _performance_summary(realized, joined, estimated, total_rows, volume, model)
        report["timeline"] = [
            _bucket_entry(
                bucket,
                bucket_seconds,
                volume_row,
                per_bucket.get(bucket, []),
                prediction_buckets.get(bucket),
                realized,
                joined,
                estimated,
                config,
            )
            for bucket, volume_row in zip(buckets, volume, strict=True)
        ]
    finally:
        query.close()
    drifted = [c["column"] for c in report["data_drift"]["columns"] if c["drifted"]]
    prediction_drifted = bool(report.get("prediction_drift", {}).get("dataset_drift"))
    if data.dataset_drift:
        status = "alert"
    elif drifted or prediction_drifted or report["quality"]:
        status = "warning"
    else:
        status = "ok"
    report["status"] = status
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


_Realized = dict[int, dict[str, float]]


def _realized(query: LogQuery, model: _Model) -> tuple[_Realized, dict[int, int]]:
    """Realized metrics per bucket (and ``-1`` for the window) and the rows with feedback."""
    import numpy as np

    from molen.monitor.performance import (
        PROBABILITY_BINS,
        classification_metrics,
        normal_label,
        regression_metrics,
    )

    if not query.has_feedback:
        return {}, {}
    metrics: _Realized = {}
    joined: dict[int, int] = {}
    if not model.classifier:
        rows = query.regressed()
        for bucket, n, *sums in rows:
            metrics[bucket], joined[bucket] = regression_metrics(n, *sums), n
        if rows:
            totals = [sum(row[i] for row in rows) for i in range(1, 6)]
            metrics[-1], joined[-1] = regression_metrics(*totals), totals[0]
        return metrics, joined
    binary = len(model.classes) == 2 and "probabilities" in query.columns
    positive = normal_label(model.classes[1]) if len(model.classes) == 2 else None
    score = "p.probabilities[2]" if binary else None
    confusion: dict[int, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    histograms: dict[int, Any] = defaultdict(lambda: np.zeros((2, PROBABILITY_BINS)))
    for bucket, predicted, truth, bin_index, n in query.classified(score):
        pair = normal_label(predicted), normal_label(truth)
        for key in (bucket, -1):
            confusion[key][pair] += n
            if bin_index is not None and positive is not None:
                histograms[key][0 if pair[1] == positive else 1][int(bin_index)] += n
    for key, table in confusion.items():
        histogram = (histograms[key][0], histograms[key][1]) if key in histograms else None
        metrics[key] = classification_metrics(dict(table), positive, histogram)
        joined[key] = sum(table.values())
    return metrics, joined


def _estimated(query: LogQuery, model: _Model) -> _Realized:
    """Metrics estimated from confidence per bucket (and ``-1`` for the window)."""
    import numpy as np

    from molen.monitor.performance import PROBABILITY_BINS, estimate

    if "probability" not in query.columns:
        return {}
    calibration = model.calibration()
    if calibration is None:
        return {}
    score = "probabilities[2]" if calibration.binary else "probability"
    counts: dict[int, Any] = defaultdict(lambda: np.zeros(PROBABILITY_BINS))
    for bucket, bin_index, n in query.scores(score):
        counts[bucket][int(bin_index)] += n
        counts[-1][int(bin_index)] += n
    return {bucket: estimate(found, calibration) for bucket, found in counts.items()}


def _performance_summary(
    realized: _Realized,
    joined: dict[int, int],
    estimated: _Realized,
    rows: int,
    volume: list[Any],
    model: _Model,
) -> dict[str, Any]:
    """The window's performance: realized (with coverage), estimated, and how far apart they were
    in the buckets that have feedback for at least half their rows."""
    found: dict[str, Any] = {
        "feedback_rows": int(joined.get(-1, 0)),
        "coverage": float(joined.get(-1, 0) / rows) if rows else 0.0,
        "metrics": realized.get(-1, {}),
        "training_metrics": model.manifest.get("metrics") or {},
        "estimated": estimated.get(-1, {}),
    }
    sizes = {row[0]: row[1] for row in volume}
    checked = [
        bucket
        for bucket in sizes
        if joined.get(bucket, 0) >= 0.5 * sizes[bucket] and bucket in estimated and bucket in realized
    ]
    if checked:
        names = sorted(set(estimated[checked[0]]) & set(realized[checked[0]]))
        found["estimate_check"] = {
            "buckets": len(checked),
            "mean_absolute_error": {
                name: sum(abs(estimated[b][name] - realized[b][name]) for b in checked) / len(checked)
                for name in names
            },
        }
    return found


def _bucket_entry(
    bucket: int,
    seconds: int,
    volume_row: tuple[Any, ...],
    columns: list[Any],
    prediction: Any,
    realized: _Realized,
    joined: dict[int, int],
    estimated: _Realized,
    config: DriftConfig,
) -> dict[str, Any]:
    from molen.monitor.drift import summarize

    verdict = summarize(columns, config.drift_share, "molen")
    return {
        "start": _bucket_time(bucket, seconds),
        "rows": int(volume_row[1]),
        "latency_ms_p50": float(volume_row[2] or 0.0),
        "latency_ms_p95": float(volume_row[3] or 0.0),
        "drifted_share": verdict.drifted_share,
        "dataset_drift": verdict.dataset_drift,
        "drift": {
            c.column: {"method": c.method, "statistic": c.statistic, "drifted": c.drifted, "psi": c.psi}
            for c in columns
        },
        "prediction_drift": None
        if prediction is None
        else {"method": prediction.method, "statistic": prediction.statistic, "drifted": prediction.drifted},
        "feedback_rows": int(joined.get(bucket, 0)),
        "coverage": float(joined.get(bucket, 0) / volume_row[1]) if volume_row[1] else 0.0,
        "metrics": realized.get(bucket, {}),
        "estimated": estimated.get(bucket, {}),
    }

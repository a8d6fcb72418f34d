"""Evidently side ("peer") of the molen data-drift benchmark: Evidently's default drift report.

Run this file with the python of the Evidently peer venv (``python benchmarks/peers.py
evidently`` builds ``.bench/evidently``), never with molen's: it imports only the standard
library, pandas and Evidently.

``--reference REF.parquet --current CUR.parquet [--repeat N] --out OUT.json``

Both Parquet files are read with pandas first (not timed), and Evidently is imported before
timing. Then, ``N`` times (default 3), the path a user takes with Evidently 0.7's defaults is
timed, as wall seconds (``time.perf_counter``) and CPU seconds of this process
(``time.process_time``):

1. ``Report([DataDriftPreset()]).run(current, reference)``: current data first, reference second
   (the 0.7 signature). No column types are declared, so Evidently infers them and its default
   decision table picks each column's test and threshold. For up to 1,000 rows that is
   "K-S p_value" for numerical columns, "chi-square p_value" for categorical ones ("Z-test
   p_value" if binary), with a threshold of 0.05. For more rows it is "Wasserstein distance
   (normed)" or "Jensen-Shannon distance", with a threshold of 0.1. ``run`` also renders the
   report's widgets, which the preset's ``render`` does by computing the legacy
   ``DataDriftTable`` (every column's test again): that is part of the default path.
2. ``snapshot.dict()``: the results as plain data. The column, method and threshold are in each
   ``ValueDrift`` metric's ``config``, and the statistic is in its ``value``. The drifted count
   and share are in ``DriftedColumnsCount``'s ``value``.
3. The per-column "drifted" verdicts: ``dict()`` has none (its ``tests`` list stays empty under
   the default ``Report(include_tests=False)``), and the rule is not the same for every test
   (K-S drifts at ``p <= threshold``, chi-square and Z at ``p < threshold``, the distances at
   ``>= threshold``). So they are read from the ``DataDriftTable`` result that step 1 already
   computed and cached in ``snapshot.context``. Looking it up does not compute it again.

The columns and the dataset-level figures written to OUT.json come from the last repeat. They
are checked against the legacy table: the same method, threshold and statistic, and the same
drifted count, or the script fails. ``dataset_drift`` is ``share >= drift_share`` (0.5 by
default), Evidently's own rule.

OUT.json: ``{"evidently", "repeats", "wall_seconds", "cpu_seconds", "columns": {name: {"method",
"statistic", "threshold", "drifted"}}, "drifted_columns", "drifted_share", "dataset_drift",
"rows": {"reference", "current"}}``. Evidently's own output goes to stderr, and the only thing
on stdout is OUT's path. Telemetry is switched off (``DO_NOT_TRACK``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

#: Evidently (iterative-telemetry) sends nothing when ``DO_NOT_TRACK`` is set.
TELEMETRY_OFF = {"DO_NOT_TRACK": "1"}

VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
DRIFTED_COLUMNS_COUNT = "evidently:metric_v2:DriftedColumnsCount"


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield


def read_frames(reference: Path, current: Path) -> tuple[Any, Any]:
    """Both datasets as pandas DataFrames (untimed)."""
    import pandas as pd

    return pd.read_parquet(reference), pd.read_parquet(current)


def run_default_drift(current: Any, reference: Any) -> tuple[dict[str, Any], Any]:
    """One timed unit: the default drift report, its results dict and the per-column verdicts.

    Returns ``snapshot.dict()`` and the legacy ``DataDriftTableResults`` that ``run`` computed
    and cached to render the preset (a cache hit, not a second computation).
    """
    from evidently import Report
    from evidently.legacy.metrics import DataDriftTable
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(current, reference)
    results = snapshot.dict()
    table, _widgets = snapshot.context.get_legacy_metric(DataDriftTable(), None, None)
    return results, table


def time_repeats(current: Any, reference: Any, repeat: int) -> tuple[list[float], list[float], Any]:
    """Wall and CPU seconds of ``repeat`` runs of ``run_default_drift``, plus the last run's output."""
    walls: list[float] = []
    cpus: list[float] = []
    last: Any = None
    for _ in range(repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        last = run_default_drift(current, reference)
        cpus.append(time.process_time() - cpu0)
        walls.append(time.perf_counter() - wall0)
    return walls, cpus, last


def _metrics_of_type(results: dict[str, Any], metric_type: str) -> list[dict[str, Any]]:
    return [m for m in results["metrics"] if m.get("config", {}).get("type") == metric_type]


def extract_columns(results: dict[str, Any], table: Any) -> dict[str, dict[str, Any]]:
    """Per column: method, statistic and threshold from ``ValueDrift``, and the verdict from the table."""
    columns: dict[str, dict[str, Any]] = {}
    for metric in _metrics_of_type(results, VALUE_DRIFT):
        config = metric["config"]
        name = config["column"]
        legacy = table.drift_by_columns[name]
        entry = {
            "method": str(config["method"]),
            "statistic": float(metric["value"]),
            "threshold": float(config["threshold"]),
            "drifted": bool(legacy.drift_detected),
        }
        _check_same(name, entry, legacy)
        columns[name] = entry
    return columns


def _check_same(name: str, entry: dict[str, Any], legacy: Any) -> None:
    """Fail unless the ``ValueDrift`` result and the legacy table agree on the column."""
    same = (
        entry["method"] == legacy.stattest_name
        and math.isclose(entry["threshold"], float(legacy.stattest_threshold))
        and math.isclose(entry["statistic"], float(legacy.drift_score), rel_tol=1e-9, abs_tol=1e-300)
    )
    if not same:
        raise RuntimeError(
            f"column {name!r}: ValueDrift {entry} disagrees with the legacy table "
            f"({legacy.stattest_name}, {legacy.stattest_threshold}, {legacy.drift_score})"
        )


def extract_dataset(
    results: dict[str, Any], columns: dict[str, dict[str, Any]], table: Any
) -> dict[str, Any]:
    """Drifted count and share (``DriftedColumnsCount``) and the dataset verdict."""
    (metric,) = _metrics_of_type(results, DRIFTED_COLUMNS_COUNT)
    count = int(metric["value"]["count"])
    share = float(metric["value"]["share"])
    drift_share = float(metric["config"].get("drift_share", 0.5))
    verdicts = sum(c["drifted"] for c in columns.values())
    if count != verdicts or count != table.number_of_drifted_columns:
        raise RuntimeError(
            f"drifted columns: DriftedColumnsCount {count}, column verdicts {verdicts}, "
            f"legacy table {table.number_of_drifted_columns}"
        )
    return {"drifted_columns": count, "drifted_share": share, "dataset_drift": share >= drift_share}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time Evidently's default data-drift report (DataDriftPreset)."
    )
    parser.add_argument("--reference", type=Path, required=True, help="reference data (Parquet)")
    parser.add_argument("--current", type=Path, required=True, help="current data (Parquet)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    os.environ.update(TELEMETRY_OFF)
    with _stdout_to_stderr():
        reference, current = read_frames(args.reference, args.current)
        import evidently.presets  # noqa: F401  (the import is not timed)

        walls, cpus, (results, table) = time_repeats(current, reference, args.repeat)
    columns = extract_columns(results, table)
    report = {
        "evidently": metadata.version("evidently"),
        "repeats": args.repeat,
        "wall_seconds": walls,
        "cpu_seconds": cpus,
        "columns": columns,
        **extract_dataset(results, columns, table),
        "rows": {"reference": len(reference), "current": len(current)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(args.out, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""MLflow side ("peer") of the web-UI benchmark: reads a store back with MLflow's own client.

Run this file with the python of the MLflow peer venv (see ``benchmarks/peers.py``): it imports
only MLflow and the standard library. Nothing here is timed.

``check --store URI --experiment NAME --run ID --key KEY``
    ``MlflowClient(URI)``: every run of experiment NAME (``search_runs`` page by page, 5,000 at a
    time), the first five by ``metrics.m0 DESC``, the params and latest metrics of run ID and
    ``get_metric_history(ID, KEY)``. ``bench_ui.py`` compares them with molen's store, from
    which the MLflow store was filled with SQL.

Output (stdout): one JSON object. MLflow's telemetry is switched off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def check(store: str, experiment: str, run_id: str, key: str) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in {store}")
    ids = [found.experiment_id]
    total, token = 0, None
    statuses: set[str] = set()
    while True:
        page = client.search_runs(ids, max_results=5000, page_token=token)
        total += len(page)
        statuses.update(r.info.status for r in page)
        token = page.token
        if not token:
            break
    top = client.search_runs(ids, max_results=5, order_by=["metrics.m0 DESC"])
    run = client.get_run(run_id)
    history = client.get_metric_history(run_id, key)
    return {
        "runs": total,
        "statuses": sorted(statuses),
        "top_by_m0": [r.info.run_id for r in top],
        "run_name": run.info.run_name,
        "params": run.data.params,
        "latest_metrics": len(run.data.metrics),
        "history": [[m.step, m.value, m.timestamp] for m in sorted(history, key=lambda m: m.step)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    read = sub.add_parser("check", help="read a store back with MlflowClient")
    read.add_argument("--store", required=True)
    read.add_argument("--experiment", required=True)
    read.add_argument("--run", required=True)
    read.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    os.environ.update(TELEMETRY_OFF)
    found = check(args.store, args.experiment, args.run, args.key)
    sys.stdout.write(json.dumps(found) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""MLflow side ("peer") of the molen model benchmark: writes the MLflow model packages.

Run this file with the python of the MLflow peer venv (see ``benchmarks/peers.py``), never
with molen's. Nothing here is timed by the benchmark: it only prepares what the timed fresh
processes of ``bench_models.py`` load with ``mlflow.pyfunc.load_model``. It prints exactly one
JSON object on stdout (MLflow's own output goes to stderr).

``save --model PKL --dir D [--format skops] [--format cloudpickle]``
    ``PKL`` is a pickle of ``{"model": fitted scikit-learn estimator, "example": DataFrame}``
    written by molen's python (both venvs have the same scikit-learn, NumPy and pandas, which
    ``bench_models.py`` checks). For each format, ``mlflow.sklearn.save_model(model, D/FORMAT,
    input_example=example, serialization_format=FORMAT)``. ``skops`` (MLflow's default) refuses
    types outside its own trusted list: the first attempt is made without
    ``skops_trusted_types``; when MLflow refuses, the types skops reports as untrusted are
    trusted and the save is repeated (both recorded in the result).
    -> ``{"packages": {FORMAT: {"path", "seconds", "bytes", "skops_trusted_types", ...}}, ...}``
``info``
    Versions of MLflow, scikit-learn, pandas, NumPy and skops in this venv.

MLflow's telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY``, ``DO_NOT_TRACK``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import platform
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow_tracking_peer import TELEMETRY_OFF

LIBRARIES = ("mlflow", "scikit-learn", "pandas", "numpy", "skops")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _save(model: Any, example: Any, path: Path, fmt: str) -> dict[str, Any]:
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    first_error = None
    trusted: list[str] | None = None
    start = time.perf_counter()
    try:
        mlflow.sklearn.save_model(model, str(path), input_example=example, serialization_format=fmt)
    except MlflowException as exc:
        if fmt != "skops" or "untrusted" not in str(exc).lower():
            raise
        import shutil

        import skops.io as sio

        first_error = str(exc).splitlines()[0][:300]
        shutil.rmtree(path, ignore_errors=True)
        trusted = sorted(sio.get_untrusted_types(data=sio.dumps(model)))
        start = time.perf_counter()
        mlflow.sklearn.save_model(
            model,
            str(path),
            input_example=example,
            serialization_format=fmt,
            skops_trusted_types=trusted,
        )
    seconds = time.perf_counter() - start
    return {
        "path": str(path),
        "serialization_format": fmt,
        "seconds": seconds,
        "bytes": _folder_bytes(path),
        "files": sorted(p.name for p in path.iterdir()),
        "skops_trusted_types": trusted,
        "first_attempt_error": first_error,
    }


def cmd_save(args: argparse.Namespace) -> dict[str, Any]:
    with args.model.open("rb") as handle:
        bundle = pickle.load(handle)
    args.dir.mkdir(parents=True, exist_ok=True)
    packages = {fmt: _save(bundle["model"], bundle["example"], args.dir / fmt, fmt) for fmt in args.format}
    return {"tool": "mlflow", "benchmark": "save", "versions": _versions(), "packages": packages}


def cmd_info(args: argparse.Namespace) -> dict[str, Any]:
    return {"tool": "mlflow", "benchmark": "info", "versions": _versions(), "executable": sys.executable}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="MLflow peer of the molen model benchmark; prints one JSON object."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("save", help="write MLflow packages of a pickled scikit-learn model")
    p.add_argument("--model", type=Path, required=True, help='pickle of {"model": ..., "example": ...}')
    p.add_argument("--dir", type=Path, required=True, help="folder for the packages (one per format)")
    p.add_argument("--format", action="append", choices=("skops", "cloudpickle", "pickle"), required=True)
    p.set_defaults(func=cmd_save)
    p = sub.add_parser("info", help="library versions")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.update(TELEMETRY_OFF)
    with _stdout_to_stderr():
        result = args.func(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

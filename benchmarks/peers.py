"""Isolated virtual environments for the "peer" tools that molen is benchmarked against.

Nothing is measured here. A peer (MLflow, ...) must not share an environment with molen,
so its benchmark script runs under the python of its own venv at ``<repo>/.bench/<name>/``
(``.bench/`` is gitignored). ``ensure_peer_venv`` creates that venv once with
``python3 -m venv``, pip-installs the requirements quietly and writes a stamp file holding the
requirement list; a later call with the same list only reads the stamp and returns at once.
A call with a different list rebuilds the venv from scratch, so no stale package is left over.

Command line (prepares the named peers, MLflow by default, and prints their pythons)::

    python benchmarks/peers.py [mlflow] [dvc]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / ".bench"
STAMP_NAME = "molen-bench-stamp.json"

#: The peers known to the benchmarks: name -> pip requirements.
PEERS: dict[str, list[str]] = {
    # MLflow with the PostgreSQL driver its server needs for postgresql:// (bench_server.py):
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3, the driver of molen's postgres extra.
    "mlflow": ["mlflow==3.17.*", "psycopg[binary]==3.*"],
    # DVC with its S3 remote plugin (the latest releases when this was written).
    "dvc": ["dvc==3.67.*", "dvc-s3==3.3.*"],
    # Evidently 0.7 (new Report/presets API), for the data-drift benchmark. Its import fails
    # under pandas 3 (it imports pandas.core.dtypes.common.infer_dtype_from_object), so pandas 2.
    "evidently": ["evidently==0.7.*", "pandas==2.3.*"],
}


def _log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def _venv_python(venv_dir: Path) -> Path:
    if os.name == "nt":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def _read_stamp(stamp: Path) -> list[str] | None:
    try:
        data = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    reqs = data.get("requirements") if isinstance(data, dict) else None
    return reqs if isinstance(reqs, list) else None


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so two benchmark processes never build one venv."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout)
        raise RuntimeError(f"command failed ({result.returncode}): {' '.join(cmd)}")


def ensure_peer_venv(name: str, requirements: list[str], *, base_python: str = "python3") -> Path:
    """Return the python of the venv ``<repo>/.bench/<name>/``, creating it on first use.

    The venv is built with ``<base_python> -m venv`` and ``pip install --quiet`` of
    ``requirements``; a stamp file records the requirement list once the install succeeded,
    so a later call with the same list returns immediately. Progress goes to stderr.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad peer name: {name!r}")
    wanted = list(requirements)
    venv_dir = BENCH_DIR / name
    python = _venv_python(venv_dir)
    stamp = venv_dir / STAMP_NAME

    if python.exists() and _read_stamp(stamp) == wanted:
        return python

    with _lock(BENCH_DIR / f"{name}.lock"):
        # Another process may have finished the same work while we waited for the lock.
        if python.exists() and _read_stamp(stamp) == wanted:
            return python
        started = time.perf_counter()
        if venv_dir.exists():
            _log(f"{name}: requirements changed or install incomplete; rebuilding {venv_dir}")
            shutil.rmtree(venv_dir)
        base = shutil.which(base_python) or sys.executable
        _log(f"{name}: creating venv {venv_dir} with {base}")
        _run([base, "-m", "venv", str(venv_dir)])
        _log(f"{name}: pip install {' '.join(wanted)} (this can take a few minutes)")
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                *wanted,
            ]
        )
        stamp.write_text(json.dumps({"requirements": wanted}, indent=2) + "\n", encoding="utf-8")
        _log(f"{name}: ready in {time.perf_counter() - started:.1f} s -> {python}")
    return python


def ensure_mlflow_venv() -> Path:
    """The MLflow peer: ``mlflow==3.17.*`` in ``<repo>/.bench/mlflow/``."""
    return ensure_peer_venv("mlflow", PEERS["mlflow"])


def ensure_dvc_venv() -> Path:
    """The DVC peer: ``dvc`` and ``dvc-s3`` in ``<repo>/.bench/dvc/``.

    Its ``dvc`` executable is ``<python>.parent / "dvc"`` (``dvc.exe`` on Windows).
    """
    return ensure_peer_venv("dvc", PEERS["dvc"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create the benchmark peer venvs.")
    parser.add_argument(
        "peers",
        nargs="*",
        metavar="PEER",
        help=f"peers to prepare (default: mlflow); {sorted(PEERS)}",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer(s): {', '.join(unknown)}; known: {', '.join(sorted(PEERS))}")
    for peer in args.peers or ["mlflow"]:
        print(ensure_peer_venv(peer, PEERS[peer]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The scaffolding the benchmark scripts share: nothing here is measured.

A benchmark script (``bench_tracking.py``, ``bench_models.py``, ``bench_serving.py``,
``bench_data.py``) parses the same few options (``standard_options``), works in a fresh folder
under ``.bench/tmp/`` that goes at the end unless ``--keep`` (``work_folder``), runs the
benchmarks chosen with ``--only`` while it logs the load average around each
(``run_selected``), prints a table (``table``, ``verdict``), its notes and the
"N of M targets missed" line (``report``) and writes every sample to a JSON document
(``document``, ``write_results``). What a script measures, its rows and their formatting stay
in the script.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TypeVar

from peers import BENCH_DIR

Log = Callable[[str], None]


class Row(Protocol):
    """What the shared parts read of a script's table row (each script has its own dataclass)."""

    benchmark: str
    passed: bool | None
    note: str


R = TypeVar("R", bound=Row)


def log(message: str) -> None:
    """Progress, to stderr."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine skews every number)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def now() -> str:
    """The date and time a run started, as its heading and JSON document give it."""
    return dt.datetime.now(dt.timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M %Z")


# -- the command line and the work folder ---------------------------------------------------------


def standard_options(
    parser: argparse.ArgumentParser,
    *,
    results: Path,
    quick: str,
    keep: str,
    only: Sequence[str],
    only_help: str = "run only these benchmarks (repeatable)",
) -> None:
    """``--quick``, ``--output`` (default ``results``), ``--keep`` and ``--only`` (one of ``only``)."""
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--output", type=Path, default=results, help=f"JSON results (default {results})")
    parser.add_argument("--keep", action="store_true", help=keep)
    parser.add_argument("--only", action="append", choices=only, help=only_help)


@contextlib.contextmanager
def work_folder(name: str, keep: bool, log: Log = log) -> Iterator[Path]:
    """A fresh folder ``.bench/tmp/<name>-<date>-<pid>`` for one run, removed at the end unless ``keep``."""
    work = BENCH_DIR / "tmp" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        if keep:
            log(f"kept {work}")
        else:
            log(f"removing {work}")
            shutil.rmtree(work, ignore_errors=True)


def run_selected(
    benches: dict[str, Callable[..., list[R]]],
    only: Collection[str] | None,
    arguments: tuple[Any, ...],
    raw: dict[str, Any],
    log: Log = log,
) -> list[R]:
    """Run the benchmarks named in ``only`` (all when it is empty), in the order of ``benches``.

    Each runs as ``bench(*arguments, raw)`` and keeps its samples in ``raw[name]``, to which the
    load averages before and after it are added. Returns the rows of all of them.
    """
    rows: list[R] = []
    for name, bench in benches.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        load_before = loadavg()
        rows.extend(bench(*arguments, raw))
        raw[name]["loadavg_before_after"] = [load_before, loadavg()]
        log(f"{name} done in {time.perf_counter() - t0:.1f} s (load average {load_before} -> {loadavg()})")
    return rows


# -- the output ------------------------------------------------------------------------------------


def heading(kind: str, date: str, quick: bool, facts: dict[str, Any]) -> list[str]:
    """The first two lines above a table: which benchmark ran when, and on what machine."""
    load = facts.get("loadavg_at_start")
    return [
        f"molen {kind} benchmark{' (--quick)' if quick else ''}, {date}",
        f"machine: {facts['nproc']} CPUs, {facts['machine']}, {facts['system']}"
        + (f", load average {load[0]:.2f}" if load else ""),
    ]


def verdict(passed: bool | None) -> str:
    """The cell of the pass column: PASS, FAIL, or ``-`` for a row without a target."""
    return "-" if passed is None else ("PASS" if passed else "FAIL")


def table(header: list[str], cells: list[list[str]], right: Collection[int] = (1, 2, 3)) -> str:
    """Columns as wide as their widest cell, the ``right`` ones right-aligned, a rule under the header."""
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return " | ".join(parts).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(c) for c in cells)])


def notes(rows: Sequence[Row]) -> list[str]:
    """One line for each row that has a note."""
    return [f"  {r.benchmark}: {r.note}" for r in rows if r.note]


def targets_missed(rows: Sequence[Row]) -> str:
    """``N of M targets missed`` (rows without a target do not count)."""
    failed = sum(r.passed is False for r in rows)
    targets = sum(r.passed is not None for r in rows)
    return f"{failed} of {targets} targets missed"


def report(text: str, rows: Sequence[Row], runtime: float, legend: str = "") -> None:
    """Print the table ``text``, the ``legend`` below it (if any), the rows' notes and the targets missed."""
    print()
    print(text)
    if legend:
        print("\n" + legend)
    lines = notes(rows)
    if lines:
        print("\nnotes:\n" + "\n".join(lines))
    print(f"\n{targets_missed(rows)}; runtime {runtime:.0f} s")


def document(
    date: str,
    quick: bool,
    facts: dict[str, Any],
    plan: Any,
    runtime: float,
    rows: Sequence[Any],
    raw: dict[str, Any],
    **after_plan: Any,
) -> dict[str, Any]:
    """The JSON document of a run: when, the machine, the plan (a dataclass), ``after_plan``,
    the runtime, the table's rows (dataclasses) and every sample (``raw``)."""
    return {
        "date": date,
        "quick": quick,
        "machine": facts,
        "plan": asdict(plan),
        **after_plan,
        "runtime_seconds": runtime,
        "rows": [asdict(r) for r in rows],
        "raw": raw,
    }


def write_results(path: Path, found: dict[str, Any], log: Log = log) -> None:
    """Write the JSON document ``found`` to ``path`` (its folder made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    log(f"results written to {path}")

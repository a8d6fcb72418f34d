"""Rendering for the CLI: one console, tables, times, JSON and CSV."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

__all__ = [
    "console",
    "error",
    "format_duration",
    "format_time",
    "format_value",
    "print_csv",
    "print_json",
    "status",
]

_console: Any = None


def console() -> Any:
    """The shared Rich console (created on first use)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(highlight=False)
    return _console


@contextlib.contextmanager
def status(text: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr while long work runs (silent unless stderr is a terminal); yields the
    function that says which step it is on."""
    if not sys.stderr.isatty():
        yield lambda _step: None
        return
    from rich.console import Console

    with Console(stderr=True).status(text, spinner="dots") as shown:
        yield lambda step: shown.update(f"{text}: {step}")


def error(message: str) -> None:
    """Print one error line (the first line red, any detail lines after it) to stderr."""
    from rich.console import Console
    from rich.markup import escape

    first, _, rest = message.partition("\n")
    err = Console(stderr=True, highlight=False)
    err.print(f"[bold red]error:[/] {escape(first)}", soft_wrap=True)
    if rest:
        err.print(escape(rest), soft_wrap=True)


def format_time(ms: int | None) -> str:
    """Local time of a millisecond timestamp, e.g. ``2026-11-27 06:40:12``."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def format_duration(ms: int | None) -> str:
    """``1.2s``, ``3m04s``, ``2h05m``; empty while unknown."""
    if ms is None:
        return ""
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def format_value(value: Any) -> str:
    """A metric or param value for a table cell (numbers to 6 significant digits)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    return str(value)


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout: indented for a terminal, compact for a pipe or file."""
    if sys.stdout.isatty():
        text = json.dumps(data, indent=2, default=str, allow_nan=False)
    else:  # the C encoder: several times faster on thousands of runs
        text = json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
    sys.stdout.write(text + "\n")


def print_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print rows as CSV on stdout."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    sys.stdout.write(buffer.getvalue())


class RichProgress:
    """A Rich progress bar for :class:`molen.progress.Progress`; silent unless stderr is a terminal."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None

    def start(self, description: str, total: int | None) -> None:
        if not sys.stderr.isatty() or (total is not None and total < 50):
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

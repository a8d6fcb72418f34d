"""Commands answered before the command tree is built.

``molen data status`` is run many times a day and in scripts; building the Typer command tree
and importing Rich would be a third of its time. Here the same service function is called and
the same output printed, for the plain forms of the command (paths, ``-f table|json``); any
other option (``--help``…) goes to the full command.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from molen.data.tracked import PathStatus

__all__ = ["print_status", "run_quick"]

_STYLES = {"unchanged": "32", "modified": "33", "deleted": "31", "not-in-cache": "35"}


def run_quick(args: list[str]) -> bool:
    """Run ``args`` here if it is a command this module answers; False to use the full CLI."""
    if args[:2] != ["data", "status"]:
        return False
    paths: list[str] = []
    form = "table"
    rest = iter(args[2:])
    for arg in rest:
        if arg in {"-f", "--format"}:
            form = next(rest, "")
        elif arg.startswith("--format="):
            form = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            return False
        else:
            paths.append(arg)
        if form not in {"table", "json"}:
            return False  # the full command explains the bad value
    from molen.data.tracked import DataSession
    from molen.progress import SILENT, Progress
    from molen.workspace import open_workspace

    progress: Progress = SILENT
    if sys.stderr.isatty():  # a bar only where someone watches
        from molen.cli.render import RichProgress

        progress = RichProgress()
    found = DataSession(open_workspace()).status(paths or None, progress=progress)
    print_status(found, form)
    return True


def print_status(found: list[PathStatus], form: str) -> None:
    """``molen data status`` output: a line per tracked path, then what changed inside it."""
    if form == "json":
        from molen.cli.render import print_json

        print_json([vars(item) for item in found])
        return
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    lines = []
    for item in found:
        state = f"{item.state:>12}"
        if color:
            state = f"\x1b[{_STYLES[item.state]}m{state}\x1b[0m"
        lines.append(f"{state}  {item.path}")
        for label, names in (("added", item.added), ("removed", item.removed), ("modified", item.modified)):
            lines.extend(f"{'':>14}{label}: {item.path}/{name}" for name in names[:20])
            if len(names) > 20:
                lines.append(f"{'':>14}… and {len(names) - 20} more {label}")
    if not found:
        lines.append("nothing is tracked yet: `molen data add PATH`")
    print("\n".join(lines))

"""``molen experiments``: list experiments."""

from __future__ import annotations

from typing import Annotated

import typer

from molen.cli.app import Format, open_workspace_of

app = typer.Typer(help="List experiments.", no_args_is_help=True)


@app.command("list")
def experiments_list(
    ctx: typer.Context,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """List experiments with their number of runs."""
    from molen.cli.render import console, format_time, print_csv, print_json

    found = open_workspace_of(ctx).metadata.list_experiments()
    rows = [(e.id, e.name, e.run_count or 0, format_time(e.created_at)) for e in found]
    header = ("id", "name", "runs", "created")
    if format is Format.json:
        print_json([dict(zip(header, row, strict=True)) for row in rows])
    elif format is Format.csv:
        print_csv(header, rows)
    else:
        from rich.table import Table

        table = Table(*header)
        for row in rows:
            table.add_row(*map(str, row))
        console().print(table)

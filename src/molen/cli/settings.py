"""``molen config``: the effective settings and where each came from."""

from __future__ import annotations

from typing import Annotated

import typer

from molen.cli.app import ShowFormat

app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)


@app.command("show")
def config_show(
    ctx: typer.Context,
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """Print every setting's effective value and where it came from."""
    from molen.cli.render import console, print_json
    from molen.config import SETTINGS, load_settings

    settings = load_settings(flags=ctx.obj or {}, require_project=False)
    rows = [(key, _shown(value), source) for key, value, source in settings.rows()]
    if format is ShowFormat.json:
        print_json({key: {"value": value, "source": source} for key, value, source in rows})
        return
    from rich.table import Table

    helps = {s.key: s.help for s in SETTINGS}
    table = Table(title=f"settings ({settings.project.root if settings.project else 'no project'})")
    for column in ("key", "value", "source", "meaning"):
        table.add_column(column, overflow="fold")
    for key, value, source in rows:
        style = "" if source == "default" else "bold"
        table.add_row(
            key,
            "" if value is None else str(value),
            f"[{style}]{source}[/]" if style else source,
            helps[key],
        )
    console().print(table)


def _shown(value: object) -> object:
    """A setting's value as it may be printed: a password in a URL is masked."""
    from molen.config import mask_password

    return mask_password(value) if isinstance(value, str) else value

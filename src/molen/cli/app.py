"""The command tree of ``molen``. Heavy modules are imported inside the commands that use them."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from molen._version import __version__

if TYPE_CHECKING:
    from molen.workspace import Workspace

app = typer.Typer(
    name="molen",
    help=(
        "molen: the machine-learning life cycle in one tool. Track experiments, version data, "
        "run pipelines, register, serve, explain and monitor models.\n\n"
        "Settings resolve flag > environment (MOLEN_…) > molen.yaml > default; "
        "`molen config show` prints them."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
runs_app = typer.Typer(help="List, show, compare, delete and restore runs.", no_args_is_help=True)
experiments_app = typer.Typer(help="List experiments.", no_args_is_help=True)
config_app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(experiments_app, name="experiments")
app.add_typer(config_app, name="config")


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class ShowFormat(str, Enum):
    table = "table"
    json = "json"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"molen {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    project: Annotated[
        Path | None,
        typer.Option("-C", "--project", help="Run as if started in this folder.", show_default=False),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="Metadata store URL (setting tracking.uri).", show_default=False),
    ] = None,
    objects_url: Annotated[
        str | None,
        typer.Option("--objects-url", help="Object store URL (setting objects.url).", show_default=False),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """molen: the machine-learning life cycle in one tool."""
    if project is not None:
        if not project.is_dir():
            from molen.errors import NotFoundError

            raise NotFoundError(f"-C {project}: no such folder")
        os.chdir(project)
    ctx.obj = {"tracking.uri": tracking_uri, "objects.url": objects_url}


def _workspace(ctx: typer.Context) -> Workspace:
    from molen.workspace import open_workspace

    return open_workspace(flags=ctx.obj or {})


# -- init and config --------------------------------------------------------------------------


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Folder of the new project (created if missing).")] = Path("."),
    experiment: Annotated[
        str | None, typer.Option(help="Default experiment name (default: the folder name).")
    ] = None,
) -> None:
    """Make a folder a molen project: molen.yaml and .molen/ (templates come with --template later)."""
    from molen.cli.render import console
    from molen.project import init_project

    project = init_project(path, experiment=experiment)
    console().print(f"Initialised molen project in [bold]{project.root}[/]")


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """Print every setting's effective value and where it came from."""
    from molen.cli.render import console, print_json
    from molen.config import SETTINGS, load_settings

    settings = load_settings(flags=ctx.obj or {}, require_project=False)
    if format is ShowFormat.json:
        print_json({key: {"value": value, "source": source} for key, value, source in settings.rows()})
        return
    from rich.table import Table

    helps = {s.key: s.help for s in SETTINGS}
    table = Table(title=f"settings ({settings.project.root if settings.project else 'no project'})")
    for column in ("key", "value", "source", "meaning"):
        table.add_column(column, overflow="fold")
    for key, value, source in settings.rows():
        style = "" if source == "default" else "bold"
        table.add_row(
            key,
            "" if value is None else str(value),
            f"[{style}]{source}[/]" if style else source,
            helps[key],
        )
    console().print(table)


# -- experiments ------------------------------------------------------------------------------


@experiments_app.command("list")
def experiments_list(
    ctx: typer.Context,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """List experiments with their number of runs."""
    from molen.cli.render import console, format_time, print_csv, print_json

    found = _workspace(ctx).metadata.list_experiments()
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


# -- runs -------------------------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    experiment: Annotated[
        list[str] | None,
        typer.Option("--experiment", "-e", help="Only runs of this experiment (repeatable)."),
    ] = None,
    filter: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help="e.g. \"metrics.auc > 0.9 and params.max_depth = '8'\" (see the README's filter language).",
        ),
    ] = None,
    sort: Annotated[
        str | None, typer.Option("--sort", help="e.g. -metrics.auc (- for descending), start_time.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many runs.")] = 50,
    deleted: Annotated[bool, typer.Option("--deleted", help="List deleted runs instead.")] = False,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """List runs, newest first: filter with the run filter language, sort by any field."""
    from molen.cli import views
    from molen.tracking.reading import search_runs

    workspace = _workspace(ctx)
    records = search_runs(
        filter, experiment or None, sort, limit=limit + 1, deleted=deleted, workspace=workspace
    )
    views.runs_table(records[:limit], format.value, truncated=len(records) > limit, limit=limit)


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id or any unique prefix.")],
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """Everything recorded about one run."""
    from molen.cli import views
    from molen.tracking.reading import get_run

    views.run_detail(get_run(run, workspace=_workspace(ctx)), format.value)


@runs_app.command("compare")
def runs_compare(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(help="Two or more run ids (or unique prefixes).")],
    lower: Annotated[
        list[str] | None,
        typer.Option("--lower-is-better", help="Metric where smaller wins (default: guessed: loss, rmse…)."),
    ] = None,
    only_changed: Annotated[
        bool, typer.Option("--only-changed", help="Hide rows where all runs agree.")
    ] = False,
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """Params and metrics side by side: differences marked, the best value of each metric in green."""
    from molen.cli import views
    from molen.errors import UsageError
    from molen.tracking.compare import compare_runs
    from molen.tracking.reading import get_run

    if len(runs) < 2:
        raise UsageError("give at least two runs to compare")
    workspace = _workspace(ctx)
    records = [get_run(run, workspace=workspace) for run in runs]
    comparison = compare_runs(records, lower=set(lower) if lower else None)
    views.comparison(comparison, format.value, only_changed=only_changed)


def _set_lifecycle(ctx: typer.Context, runs: list[str], lifecycle: str) -> None:
    from molen.cli.render import console

    workspace = _workspace(ctx)
    store = workspace.metadata
    ids = [store.resolve_run_id(run) for run in runs]
    store.set_lifecycle(ids, lifecycle)
    verb = "Deleted" if lifecycle == "deleted" else "Restored"
    console().print(f"{verb} {len(ids)} run{'s' if len(ids) != 1 else ''}: {', '.join(i[:8] for i in ids)}")


@runs_app.command("delete")
def runs_delete(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(help="Run ids or unique prefixes.")],
) -> None:
    """Hide runs from lists and searches (restorable with `molen runs restore`)."""
    _set_lifecycle(ctx, runs, "deleted")


@runs_app.command("restore")
def runs_restore(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(help="Run ids or unique prefixes.")],
) -> None:
    """Bring deleted runs back."""
    _set_lifecycle(ctx, runs, "active")


@app.command()
def demo(
    keep: Annotated[
        Path | None, typer.Option(help="Create the demo project here instead of a temp folder.")
    ] = None,
) -> None:
    """Record a few tracked runs in a fresh temporary project and compare them."""
    from molen.demo import run_demo

    run_demo(keep)

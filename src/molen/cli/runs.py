"""``molen runs``: list, show, compare, delete and restore runs."""

from __future__ import annotations

from typing import Annotated

import typer

from molen.cli.app import Format, ShowFormat, open_workspace_of

app = typer.Typer(help="List, show, compare, delete and restore runs.", no_args_is_help=True)


@app.command("list")
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
    from molen.cli.quick import runs_list as list_runs

    list_runs(experiment, filter, sort, limit, deleted, format.value, open_workspace_of(ctx))


@app.command("show")
def runs_show(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id or any unique prefix.")],
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """Everything recorded about one run."""
    from molen.cli import views
    from molen.tracking.reading import get_run

    views.run_detail(get_run(run, workspace=open_workspace_of(ctx)), format.value)


@app.command("compare")
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
    workspace = open_workspace_of(ctx)
    records = [get_run(run, workspace=workspace) for run in runs]
    comparison = compare_runs(records, lower=set(lower) if lower else None)
    views.comparison(comparison, format.value, only_changed=only_changed)


def _set_lifecycle(ctx: typer.Context, runs: list[str], lifecycle: str) -> None:
    from molen.cli.render import console

    workspace = open_workspace_of(ctx)
    store = workspace.metadata
    ids = [store.resolve_run_id(run) for run in runs]
    store.set_lifecycle(ids, lifecycle)
    verb = "Deleted" if lifecycle == "deleted" else "Restored"
    console().print(f"{verb} {len(ids)} run{'s' if len(ids) != 1 else ''}: {', '.join(i[:8] for i in ids)}")


@app.command("delete")
def runs_delete(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(help="Run ids or unique prefixes.")],
) -> None:
    """Hide runs from lists and searches (restorable with `molen runs restore`)."""
    _set_lifecycle(ctx, runs, "deleted")


@app.command("restore")
def runs_restore(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(help="Run ids or unique prefixes.")],
) -> None:
    """Bring deleted runs back."""
    _set_lifecycle(ctx, runs, "active")

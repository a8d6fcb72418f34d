"""``molen import``: bring another tool's history into molen."""

from __future__ import annotations

from typing import Annotated

import typer

from molen.cli.app import open_workspace_of

app = typer.Typer(no_args_is_help=True, help="Bring another tool's history into molen.")


@app.command("mlflow")
def import_mlflow(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="The MLflow store: sqlite:///mlflow.db (or another database URL) or http://host:5000.",
        ),
    ],
    artifacts: Annotated[
        str | None,
        typer.Option(help="Folder the store's relative artifact locations start from (where mlflow ran)."),
    ] = None,
) -> None:
    """Import experiments, runs (params, tags, full metric histories, artifacts), registered models,
    versions and aliases. Run it again to import only what is new."""
    from molen.cli.render import RichProgress, console
    from molen.importers.mlflow import import_mlflow as run_import

    workspace = open_workspace_of(ctx)
    bar = RichProgress()
    current: list[str] = []

    def progress(what: str, done: int, total: int) -> None:
        if current[:1] != [what]:
            bar.finish()
            bar.start(f"importing {what}", total)
            current[:] = [what]
        bar.advance()

    try:
        summary = run_import(source, workspace=workspace, artifacts=artifacts, progress=progress)
    finally:
        bar.finish()
    out = console()
    out.print(f"experiments: {summary.experiments}", soft_wrap=True)
    out.print(
        f"runs: {summary.runs} imported ({summary.runs_skipped} already here), "
        f"{summary.metric_values:,} metric values, {summary.artifacts} artifacts",
        soft_wrap=True,
    )
    out.print(
        f"model versions: {summary.versions} imported ({summary.versions_skipped} already here), "
        f"{summary.aliases} aliases moved",
        soft_wrap=True,
    )

"""``molen template``: keep a project made by ``molen init --template`` up to date."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    no_args_is_help=True, help="Update a project from molen's template; re-pin its environment."
)


def _project_root() -> Path:
    from molen.project import find_project

    return find_project(Path.cwd()).root


@app.command()
def update() -> None:
    """Bring in what changed in molen's template since this project was made.

    Files you have not edited are updated; a file you edited that the template also changed gets
    the template's version beside it as FILE.template-new, for you to merge. Commit first, so git
    shows what changed.
    """
    from molen.cli.render import console
    from molen.scaffold import update_project

    result = update_project(_project_root())
    out = console()
    for relative in result.added:
        out.print(f"[green]added[/]    {relative}")
    for relative in result.updated:
        out.print(f"[green]updated[/]  {relative}")
    for relative in result.conflicts:
        note = f"you and the template both changed it; see {relative}.template-new"
        out.print(f"[yellow]merge[/]    {relative}: {note}")
    out.print(
        f"template version {result.old_version} -> {result.new_version}: {len(result.added)} added, "
        f"{len(result.updated)} updated, {len(result.conflicts)} to merge, {result.unchanged} unchanged"
    )
    if result.conflicts:
        raise typer.Exit(1)


@app.command()
def lock() -> None:
    """Pin requirements.in, and every package it pulls in, to the versions installed here, in
    requirements.lock (the pip-tools format: pip install -r requirements.lock)."""
    from molen.atomic import write_atomic
    from molen.cli.render import console
    from molen.envlock import IN_NAME, LOCK_NAME, lock_text
    from molen.errors import NotFoundError

    root = _project_root()
    source = root / IN_NAME
    if not source.is_file():
        raise NotFoundError(f"no {IN_NAME} in {root}: list the project's requirements there first")
    text = lock_text(source.read_text().splitlines())
    write_atomic(root / LOCK_NAME, text.encode())
    pins = sum(1 for line in text.splitlines() if "==" in line and not line.startswith("#"))
    console().print(f"wrote {LOCK_NAME}: {pins} packages pinned")

"""``molen remote``: the shared places data is pushed to and pulled from."""

from __future__ import annotations

from typing import Annotated

import typer

from molen.cli.app import ShowFormat, open_workspace_of

app = typer.Typer(help="Add, list, remove remotes and pick the default.", no_args_is_help=True)


def _project(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from molen.errors import UsageError

    project = open_workspace_of(ctx).settings.project
    if project is None:
        raise UsageError("remotes belong to a project: run `molen init` first")
    return project


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A short name, e.g. origin.")],
    url: Annotated[str, typer.Argument(help="A folder, or s3://bucket/prefix (any fsspec URL).")],
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="An S3-compatible server (MinIO, Ceph).")
    ] = None,
    default: Annotated[bool, typer.Option("--default", "-d", help="Make it the default remote.")] = False,
) -> None:
    """Add a remote (the first one becomes the default)."""
    from molen.cli.render import console
    from molen.data.remotes import add_remote

    remote = add_remote(_project(ctx), name, url, endpoint_url=endpoint_url, default=default)
    console().print(f"added remote {remote.name} → {remote.url}{' (default)' if remote.default else ''}")


@app.command("list")
def list_(
    ctx: typer.Context, format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table
) -> None:
    """List the remotes; the default is marked."""
    from molen.cli.render import console, print_json
    from molen.data.remotes import list_remotes

    remotes = list_remotes(_project(ctx))
    if format is ShowFormat.json:
        print_json([vars(r) for r in remotes])
        return
    for r in remotes:
        extra = f"  (endpoint {r.endpoint_url})" if r.endpoint_url else ""
        console().print(f"{'*' if r.default else ' '} {r.name}  {r.url}{extra}")
    if not remotes:
        console().print("no remotes: `molen remote add NAME URL`")


@app.command("remove")
def remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The remote to remove.")]) -> None:
    """Remove a remote (the data on it stays)."""
    from molen.cli.render import console
    from molen.data.remotes import remove_remote

    remove_remote(_project(ctx), name)
    console().print(f"removed remote {name}")


@app.command("default")
def default(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The remote to use by default.")]
) -> None:
    """Make a remote the one push, pull and fetch use when none is named."""
    from molen.cli.render import console
    from molen.data.remotes import set_default_remote

    set_default_remote(_project(ctx), name)
    console().print(f"default remote: {name}")

"""``molen server``: the tracking server a team shares."""

from __future__ import annotations

from typing import Annotated

import typer

from molen.cli.app import app


@app.command()
def server(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every one).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    store: Annotated[
        str | None,
        typer.Option(help="Metadata store: postgresql+psycopg://… or sqlite:///… (default: tracking.uri)."),
    ] = None,
    artifacts: Annotated[
        str | None, typer.Option(help="Object store: s3://bucket/prefix or a folder (default: objects.url).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    auth: Annotated[
        bool, typer.Option("--auth", help="Require a token (molen tokens create) for everything but /health.")
    ] = False,
    artifacts_direct: Annotated[
        bool,
        typer.Option(
            "--artifacts-direct",
            help="Tell clients where the object store is, so they read and write artifacts there "
            "themselves with their own credentials (large models skip the server); default: "
            "through the server.",
        ),
    ] = False,
) -> None:
    """Serve molen's REST API in front of a metadata store and an object store, for a team.

    Point clients at it with MOLEN_TRACKING_URI=http://HOST:PORT: every molen command and the
    Python API then read and write through it (artifacts and models too). The API is listed at
    /docs; /health answers at once, before the stores are opened.
    """
    from molen.cli.render import console
    from molen.config import load_settings
    from molen.errors import UsageError
    from molen.server.run import ServerOptions, serve

    # a project gives the defaults; with --store and --artifacts none is needed, and the
    # environment (MOLEN_OBJECTS_S3_ENDPOINT_URL, …) still counts
    settings = load_settings(flags=ctx.obj or {}, require_project=store is None or artifacts is None)
    chosen_store = store or str(settings["tracking.uri"] or "")
    chosen_objects = artifacts or str(settings["objects.url"] or "")
    if chosen_store.startswith(("http://", "https://")):
        raise UsageError(
            "--store must be a database (postgresql+psycopg://… or sqlite:///…), not another server"
        )
    if not chosen_objects:
        raise UsageError("no object store: give --artifacts s3://bucket/prefix or a folder")
    endpoint = settings["objects.s3_endpoint_url"]
    console().print(
        f"molen server on http://{host}:{port}  (API: /docs, health: /health); "
        f"metadata {_masked(chosen_store)}, objects {chosen_objects}"
        + (" (clients go there directly)" if artifacts_direct else "")
        + ("; tokens required" if auth else "")
    )
    serve(ServerOptions(chosen_store, chosen_objects, endpoint, host, port, workers, auth, artifacts_direct))


@app.command()
def ui(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every one).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
) -> None:
    """Open the web UI on this project's store: runs, charts, comparisons and models.

    Browse http://HOST:PORT/ui/ (no internet needed: every script ships with molen). A team's
    `molen server` serves the same UI at /ui/; against one (MOLEN_TRACKING_URI=http://…), open
    that instead.
    """
    from molen.cli.render import console
    from molen.config import load_settings
    from molen.errors import UsageError
    from molen.server.run import ServerOptions, serve
    from molen.ui import vendored

    settings = load_settings(flags=ctx.obj or {})
    store = str(settings["tracking.uri"] or "")
    if store.startswith(("http://", "https://")):
        raise UsageError(f"this project tracks to a molen server: open {store.rstrip('/')}/ui/ in a browser")
    if not vendored():
        raise UsageError(
            "the web UI's scripts are missing from this installation: in a git checkout, run "
            "python scripts/vendor_ui.py"
        )
    objects = str(settings["objects.url"] or "")
    console().print(f"molen ui on http://{host}:{port}/ui/  (Ctrl-C stops it); store {_masked(store)}")
    root = str(settings.project.root) if settings.project is not None else None
    serve(ServerOptions(store, objects, settings["objects.s3_endpoint_url"], host, port, project=root))


def _masked(url: str) -> str:
    from molen.config import mask_password

    return mask_password(url)

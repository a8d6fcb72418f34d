"""``molen serve``: a registered model as a REST service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from molen.cli.app import app, open_workspace_of


@app.command()
def serve(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="NAME@ALIAS (followed as it moves) or NAME/VERSION.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    shadow: Annotated[
        str | None,
        typer.Option(help="A challenger (NAME@ALIAS) answering a copy of every request, logged only."),
    ] = None,
    canary: Annotated[
        str | None, typer.Option(help="A challenger answering a share of requests: NAME@ALIAS:PERCENT.")
    ] = None,
    log_dir: Annotated[
        str | None,
        typer.Option("--log-dir", help="Prediction log location (setting serving.prediction_log)."),
    ] = None,
    no_log: Annotated[bool, typer.Option("--no-log", help="Keep no prediction log.")] = False,
    poll: Annotated[
        float, typer.Option(help="Seconds between checks of where the alias points (0: never).")
    ] = 5.0,
    max_body: Annotated[int, typer.Option(help="Largest request body accepted, in bytes (413 beyond).")] = 16
    * 1024
    * 1024,
) -> None:
    """Serve a registered model: /predict, MLflow's /invocations, the V2 inference protocol.

    Also /feedback (ground truth for request ids), /health, /metrics (Prometheus) and /docs.

    Every answered row is logged to Parquet for monitoring. Set MOLEN_SERVE_TOKEN to require a bearer token.
    """
    from molen.cli.render import console
    from molen.serving.run import ServeOptions, build_app
    from molen.serving.run import serve as run_server

    workspace = open_workspace_of(ctx)
    project = workspace.settings.project
    root = str(project.root) if project is not None else str(Path.cwd())
    log_root = None if no_log else (log_dir or workspace.settings["serving.prediction_log"])
    options = ServeOptions(
        uri=model,
        project=root,
        host=host,
        port=port,
        workers=workers,
        log_root=log_root,
        shadow=shadow,
        canary=canary,
        poll_interval=poll,
        max_body=max_body,
        flags={key: value for key, value in (ctx.obj or {}).items() if value is not None} or None,
    )
    build_app(options)  # load once here: a wrong URI fails now, with one line, not in every worker
    console().print(
        f"Serving [bold]{model}[/] on http://{host}:{port}  (docs: /docs, health: /health"
        + (f", predictions logged to {log_root}" if log_root else "")
        + ")"
    )
    run_server(options)

"""``molen serve``: a registered model as a REST service."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from molen.cli.app import RayAddress, app, open_workspace_of

if TYPE_CHECKING:
    from molen.serving.build import Built


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
    explain_log: Annotated[
        bool,
        typer.Option(
            "--explain-log", help="Also log SHAP attributions of every answered row (after answering)."
        ),
    ] = False,
    drift_every: Annotated[
        str | None,
        typer.Option(
            "--drift-every",
            help="Export per-feature drift of each period (5m, 1h) as Prometheus gauges on /metrics.",
        ),
    ] = None,
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
    from molen.monitor.report import parse_window
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
        explain_log=explain_log,
        drift_every=parse_window(drift_every, "--drift-every").total_seconds() if drift_every else 0.0,
        flags={key: value for key, value in (ctx.obj or {}).items() if value is not None} or None,
    )
    checked = build_app(options)  # load once here: a wrong URI fails now, with one line, not in every worker
    checked.state.server.close()  # its log writer and threads: the workers make their own
    console().print(
        f"Serving [bold]{model}[/] on http://{host}:{port}  (docs: /docs, health: /health"
        + (f", predictions logged to {log_root}" if log_root else "")
        + ")"
    )
    run_server(options)


@app.command()
def predict(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="NAME@ALIAS, NAME/VERSION or run:RUN/model.")],
    input: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="Rows to score: a .parquet or .csv file, or Parquet files (a glob or folder), "
            "local or in object storage, e.g. s3://bucket/in/*.parquet.",
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Where to write the scored rows: a .parquet file (local or s3://…); with "
            "--executor ray, a folder or prefix (one output file per input file).",
        ),
    ],
    chunk_size: Annotated[
        int, typer.Option(min=1, help="Rows per chunk (memory use grows with it).")
    ] = 100_000,
    log: Annotated[
        bool, typer.Option("--log", help="Log every row to the prediction log, as molen serve does.")
    ] = False,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="local, or ray: each input file a task on a Ray cluster (shared stores needed).",
        ),
    ] = "local",
    ray_address: RayAddress = None,
) -> None:
    """Score a file in chunks: the input's columns plus prediction (and class probabilities).

    Files larger than memory stream through; the output appears only when complete.
    """
    from molen.cli.render import RichProgress, console
    from molen.serving.batch import predict_file

    workspace = open_workspace_of(ctx)
    if executor == "ray":
        _predict_on_ray(workspace, model, input, output, chunk_size, log, ray_address)
        return
    if executor != "local":
        raise typer.BadParameter(f"--executor {executor!r}: use local or ray")
    bar = RichProgress()
    started = False
    shown = 0

    def progress(done: int, total: int | None) -> None:
        nonlocal started, shown
        if not started:
            bar.start("scoring rows", total)
            started = True
        bar.advance(done - shown)
        shown = done

    try:
        result = predict_file(
            model,
            input,
            output,
            chunk_size=chunk_size,
            log_root=workspace.settings["serving.prediction_log"] if log else None,
            workspace=workspace,
            progress=progress,
        )
    finally:
        if started:
            bar.finish()
    rate = result.rows / result.seconds if result.seconds else 0.0
    console().print(
        f"Scored {result.rows:,} rows with {model} (version {result.version}) in {result.seconds:.1f} s "
        f"({rate:,.0f} rows/s) → {result.output}"
    )


build_app_cli = typer.Typer(
    help="Package a registered model for deployment: a Docker build context, Kubernetes manifests.",
    no_args_is_help=True,
)


def _predict_on_ray(
    workspace: Any, model: str, source: str, output: str, chunk_size: int, log: bool, address: str | None
) -> None:
    from molen.cli.render import RichProgress, console
    from molen.compute.scoring import predict_on_ray

    bar = RichProgress()
    shown = False

    def start(files: int) -> None:
        nonlocal shown
        bar.start(f"scoring {files} files on the cluster", files)
        shown = True

    started = time.perf_counter()
    try:
        scored = predict_on_ray(
            model,
            workspace,
            source,
            output,
            chunk_size=chunk_size,
            log=log,
            address=address,
            on_start=start,
            on_done=lambda _file: bar.advance(1),
        )
    finally:
        if shown:
            bar.finish()
    seconds = time.perf_counter() - started
    rows = sum(s.rows for s in scored)
    version = scored[0].version if scored else None
    console().print(
        f"Scored {rows:,} rows in {len(scored)} files with {model} (version {version}) on the cluster "
        f"in {seconds:.1f} s ({rows / seconds if seconds else 0:,.0f} rows/s) → {output.rstrip('/')}/"
    )


def _print_built(built: Built) -> None:
    from collections import Counter

    from molen.cli.render import console

    console().print(
        f"Wrote {len(built.files)} files for {built.uri} (version {built.version}) to {built.folder}:"
    )
    tops = Counter(name.split("/", 1)[0] + ("/" if "/" in name else "") for name in built.files)
    for top, count in sorted(tops.items()):
        console().print(f"  {top}" + (f"  ({count} files)" if top.endswith("/") else ""))


@build_app_cli.command("docker")
def build_docker_cli(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the build context.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty output folder.")] = False,
) -> None:
    """A Docker build context: Dockerfile, pinned requirements, molen, and the model bundled.

    Then: docker build -t churn:3 DIR && docker run -p 8080:8080 churn:3
    """
    from molen.serving.build import build_docker

    _print_built(build_docker(model, output, workspace=open_workspace_of(ctx), force=force))


@build_app_cli.command("k8s")
def build_k8s_cli(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the manifests.")],
    image: Annotated[str | None, typer.Option(help="Container image (default NAME:VERSION).")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas (the autoscaler's minimum).")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty output folder.")] = False,
) -> None:
    """Kubernetes manifests: Deployment (V2 health probes, Prometheus annotations), Service, HPA.

    Then: kubectl apply -f DIR
    """
    from molen.serving.build import build_kubernetes

    built = build_kubernetes(
        model, output, workspace=open_workspace_of(ctx), image=image, replicas=replicas, force=force
    )
    _print_built(built)

"""Starting ``molen serve``: the server object, the app, and uvicorn with N workers.

With ``--workers`` above 1 uvicorn's supervisor shares one listening socket between worker
processes. It binds that socket without naming the protocol, so asyncio does not set
``TCP_NODELAY`` on the connections it accepts, and every kept-alive response then waits for
the client's delayed ACK (about 40 ms). molen binds the socket itself, as TCP, with
``TCP_NODELAY`` set, and hands it to the supervisor.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, NamedTuple

__all__ = ["ServeOptions", "build_app", "serve"]

ENV = "MOLEN_SERVE_OPTIONS"


class ServeOptions(NamedTuple):
    """Everything ``molen serve`` was asked for (passed to worker processes as JSON)."""

    uri: str
    project: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    log_root: str | None = None
    shadow: str | None = None
    canary: str | None = None
    poll_interval: float = 5.0
    max_body: int = 16 * 1024 * 1024
    explain_log: bool = False
    drift_every: float = 0.0  # seconds; 0: no drift gauges
    flags: dict[str, Any] | None = None


def build_app(options: ServeOptions) -> Any:
    """The FastAPI app for ``options`` (what each worker runs)."""
    from molen.serving.app import create_app
    from molen.serving.metrics import ServerMetrics
    from molen.serving.predlog import PredictionLog, log_storage_options
    from molen.serving.server import ModelServer, ServedModel, parse_canary
    from molen.workspace import open_workspace

    workspace = open_workspace(options.project, flags=options.flags)
    champion = ServedModel(options.uri, workspace, role="champion")
    shadow = ServedModel(options.shadow, workspace, role="shadow") if options.shadow else None
    canary = None
    share = 0.0
    if options.canary:
        uri, share = parse_canary(options.canary)
        canary = ServedModel(uri, workspace, role="canary")
    prediction_log = (
        PredictionLog(options.log_root, storage_options=log_storage_options(options.log_root, workspace))
        if options.log_root
        else None
    )
    server = ModelServer(
        champion,
        metrics=ServerMetrics(),
        prediction_log=prediction_log,
        shadow=shadow,
        canary=canary,
        canary_share=share,
        explain_log=options.explain_log,
        drift_every=options.drift_every,
    )
    return create_app(
        server,
        token=os.environ.get("MOLEN_SERVE_TOKEN") or None,
        max_body=options.max_body,
        poll_interval=options.poll_interval,
    )


def app_from_environment() -> Any:
    """The app factory worker processes call (options in ``MOLEN_SERVE_OPTIONS``)."""
    return build_app(ServeOptions(**json.loads(os.environ[ENV])))


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(options: ServeOptions) -> None:
    """Run the server until interrupted (SIGINT/SIGTERM finish in-flight requests and flush
    the prediction log)."""
    import uvicorn

    os.environ[ENV] = json.dumps(options._asdict())
    config = uvicorn.Config(
        "molen.serving.run:app_from_environment",
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    sock = _socket(options.host, options.port)
    server = uvicorn.Server(config)
    if options.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[sock]).run()
    else:
        server.run(sockets=[sock])

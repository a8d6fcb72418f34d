"""Starting ``molen server``: uvicorn on the app of :mod:`molen.server.app`, in one process or
in ``--workers N`` processes (each opens the stores itself; options travel in the environment)."""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

__all__ = ["ServerOptions", "app_from_environment", "serve"]

ENV = "MOLEN_SERVER_OPTIONS"


class ServerOptions(NamedTuple):
    """What ``molen server`` was asked for."""

    store: str
    artifacts: str
    s3_endpoint_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    auth: bool = False
    artifacts_direct: bool = False
    project: str | None = None  # molen ui: the project whose data, pipeline and monitoring it shows


def app_from_environment() -> Any:
    """The app factory the worker processes call."""
    from molen.server.app import create_app

    options = ServerOptions(**json.loads(os.environ[ENV]))
    return create_app(
        options.store,
        options.artifacts,
        s3_endpoint_url=options.s3_endpoint_url,
        auth=options.auth,
        artifacts_direct=options.artifacts_direct,
        project_root=options.project,
    )


def serve(options: ServerOptions) -> None:
    """Run the server until it is stopped (Ctrl-C, SIGTERM)."""
    import uvicorn

    os.environ[ENV] = json.dumps(options._asdict())
    uvicorn.run(
        "molen.server.run:app_from_environment",
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )

"""A molen project: a folder with ``molen.yaml`` at its root and ``.molen/`` for local state.

Commands find the project from any subfolder, the way git finds its repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from molen.atomic import write_atomic
from molen.errors import ConflictError, ProjectNotFoundError

__all__ = ["CONFIG_NAME", "STATE_DIR", "Project", "find_project", "init_project"]

CONFIG_NAME = "molen.yaml"
STATE_DIR = ".molen"

_CONFIG_TEMPLATE = """\
# molen project settings. Every key can be overridden by an environment variable
# (tracking.uri -> MOLEN_TRACKING_URI) or a command-line flag; `molen config show`
# prints the effective values and where each came from. For example:
#   tracking.uri  metadata store: sqlite:///.molen/molen.db (default, relative to this file)
#                 or, for a team, postgresql+psycopg://user@host/db
#   objects.url   object store for data, models and artifacts: .molen/cache (default)
#                 or, for a team, s3://bucket/prefix
tracking:
  experiment: {experiment}
"""


class Project(NamedTuple):
    """A project root; paths derived from it."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR


def find_project(start: Path | str | None = None) -> Project:
    """Return the project containing ``start`` (default: the current folder).

    Raises :class:`ProjectNotFoundError` when neither ``start`` nor a parent holds ``molen.yaml``.
    """
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return Project(folder)
    raise ProjectNotFoundError(
        f"no molen project in {here} or any parent folder (no {CONFIG_NAME}); "
        "run `molen init` there, or cd into a project"
    )


def init_project(path: Path | str, *, experiment: str | None = None) -> Project:
    """Create the minimal files of a project at ``path`` and return it.

    Writes ``molen.yaml`` and ``.molen/`` (ignored by git). Raises :class:`ConflictError` when
    ``path`` already holds a project.

    Example: ``init_project("churn")``
    """
    root = Path(path).resolve()
    config = root / CONFIG_NAME
    if config.exists():
        raise ConflictError(f"{root} is already a molen project ({CONFIG_NAME} exists)")
    root.mkdir(parents=True, exist_ok=True)
    state = root / STATE_DIR
    state.mkdir(exist_ok=True)
    (state / ".gitignore").write_text("# local molen state: never committed\n*\n")
    text = _CONFIG_TEMPLATE.format(experiment=json.dumps(experiment or root.name or "Default"))
    write_atomic(config, text.encode())
    return Project(root)

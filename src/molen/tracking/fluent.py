"""The module-level logging functions: each acts on the active run (see :func:`molen.start_run`).

``molen.log_metric("auc", 0.9)`` is ``molen.active_run().log_metric("auc", 0.9)``, raising a
clear :class:`~molen.errors.UsageError` when no run is active.
"""

from __future__ import annotations

import os
from typing import Any

from molen.entities import Artifact, DataInput
from molen.tracking.runs import require_active_run

__all__ = [
    "log_artifact",
    "log_dict",
    "log_figure",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_text",
    "set_tag",
    "set_tags",
]


def log_param(key: str, value: Any) -> None:
    """Record one param of the active run."""
    require_active_run().log_param(key, value)


def log_params(params: dict[str, Any]) -> None:
    """Record several params of the active run."""
    require_active_run().log_params(params)


def log_metric(key: str, value: float, step: int | None = None, timestamp: int | None = None) -> None:
    """Record one metric value of the active run (buffered)."""
    require_active_run().log_metric(key, value, step, timestamp)


def log_metrics(metrics: dict[str, float], step: int | None = None, timestamp: int | None = None) -> None:
    """Record several metric values of the active run."""
    require_active_run().log_metrics(metrics, step, timestamp)


def set_tag(key: str, value: Any) -> None:
    """Set a tag of the active run."""
    require_active_run().set_tag(key, value)


def set_tags(tags: dict[str, Any]) -> None:
    """Set several tags of the active run."""
    require_active_run().set_tags(tags)


def log_artifact(path: str | os.PathLike[str], artifact_path: str | None = None) -> list[Artifact]:
    """Store a file or folder with the active run."""
    return require_active_run().log_artifact(path, artifact_path)


def log_text(text: str, artifact_file: str) -> Artifact:
    """Store text as an artifact of the active run."""
    return require_active_run().log_text(text, artifact_file)


def log_dict(dictionary: Any, artifact_file: str) -> Artifact:
    """Store a dict as JSON/YAML with the active run."""
    return require_active_run().log_dict(dictionary, artifact_file)


def log_figure(figure: Any, artifact_file: str) -> Artifact:
    """Store a matplotlib figure with the active run."""
    return require_active_run().log_figure(figure, artifact_file)


def log_input(data: Any, name: str | None = None, *, role: str = "input") -> DataInput:
    """Record a data version (path or data frame) the active run read."""
    return require_active_run().log_input(data, name, role=role)

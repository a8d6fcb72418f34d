"""The records molen stores and returns: plain, immutable data with no behaviour.

These are what the Python API, the CLI and (later) the REST server hand to users. They import
nothing but the standard library.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "RUN_STATUSES",
    "AliasEvent",
    "Artifact",
    "DataInput",
    "Experiment",
    "GateRecord",
    "Metric",
    "ModelVersion",
    "RegisteredModel",
    "RunRecord",
    "RunStatus",
    "json_number",
]


class RunStatus:
    """The states of a run. A run starts RUNNING and ends in one of the other three."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


RUN_STATUSES = (RunStatus.RUNNING, RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)


@dataclass(frozen=True)
class Experiment:
    """A named group of runs."""

    id: int
    name: str
    created_at: int
    lifecycle: str = "active"
    run_count: int | None = None


class Metric(NamedTuple):
    """One logged value of a metric. ``timestamp`` is milliseconds since the epoch.

    A named tuple, not a dataclass: training loops create millions of them.
    """

    key: str
    value: float
    step: int
    timestamp: int


@dataclass(frozen=True)
class Artifact:
    """A file attached to a run, stored in the object store under ``digest``."""

    path: str
    digest: str
    size: int


@dataclass(frozen=True)
class DataInput:
    """A data version a run read (role ``input``) or wrote (role ``output``)."""

    path: str
    digest: str
    role: str
    kind: str
    size: int
    file_count: int


@dataclass(frozen=True)
class RunRecord:
    """Everything recorded about one run, as read back from the store.

    ``metrics`` holds the latest value of each metric (highest step, then newest timestamp);
    :func:`molen.get_metric_history` returns every value.
    """

    id: str
    experiment_id: int
    experiment: str
    name: str
    status: str
    start_time: int
    end_time: int | None
    parent_id: str | None = None
    lifecycle: str = "active"
    user: str | None = None
    host: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    inputs: list[DataInput] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)

    @property
    def duration_ms(self) -> int | None:
        """Milliseconds from start to end, or ``None`` while running."""
        return None if self.end_time is None else self.end_time - self.start_time

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; NaN and infinite metric values become the strings JSON lacks."""
        return {
            "id": self.id,
            "experiment_id": self.experiment_id,
            "experiment": self.experiment,
            "name": self.name,
            "status": self.status,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration_ms": self.duration_ms,
            "parent_id": self.parent_id,
            "lifecycle": self.lifecycle,
            "user": self.user,
            "host": self.host,
            "params": dict(self.params),
            "metrics": {key: json_number(value) for key, value in self.metrics.items()},
            "tags": dict(self.tags),
            "inputs": [asdict(item) for item in self.inputs],
            "artifacts": [asdict(item) for item in self.artifacts],
        }


def json_number(value: float) -> float | str:
    """``value`` itself, or ``"NaN"``/``"Infinity"``/``"-Infinity"`` which JSON cannot hold."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model: the package (by ``digest``) a run produced.

    ``uri`` is how :func:`molen.load_model` names it (``churn/3``); ``aliases`` are the
    aliases that point at it now.
    """

    name: str
    version: int
    run_id: str | None
    artifact_path: str
    digest: str
    flavor: str
    created_at: int
    user: str | None = None
    description: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        return f"{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "aliases": list(self.aliases), "uri": self.uri}


@dataclass(frozen=True)
class RegisteredModel:
    """A model name, its latest version and where its aliases point."""

    name: str
    created_at: int
    description: str | None = None
    latest_version: int | None = None
    version_count: int = 0
    aliases: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias: ``action`` is ``set``, ``rollback`` or ``remove``.

    ``version`` is where the alias points after the move (``None`` once removed) and
    ``previous`` where it pointed before (``None`` when it was new).
    """

    name: str
    alias: str
    version: int | None
    previous: int | None
    action: str
    time: int
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class GateRecord:
    """A quality-gate verdict as stored: ``verdict`` is the full JSON verdict."""

    name: str
    candidate: int
    against_alias: str
    against_version: int | None
    passed: bool
    time: int
    user: str | None
    verdict: dict[str, Any]

"""molen: the whole machine-learning life cycle in one tool.

The public Python API. Names are loaded on first use so that ``import molen`` (and the
``molen`` command) start fast.

Example::

    import molen

    with molen.start_run(experiment="churn") as run:
        run.log_params({"max_depth": 8})
        run.log_metric("auc", 0.91)
    molen.search_runs("metrics.auc > 0.9")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from molen._version import __version__

if TYPE_CHECKING:
    from molen.entities import RunRecord
    from molen.errors import MolenError
    from molen.models.predictor import Predictor
    from molen.monitor.drift import drift_report
    from molen.registry.service import load_model
    from molen.tracking.fluent import (
        log_artifact,
        log_dict,
        log_figure,
        log_input,
        log_metric,
        log_metrics,
        log_param,
        log_params,
        log_text,
        set_tag,
        set_tags,
    )
    from molen.tracking.reading import get_metric_history, get_run, search_runs
    from molen.tracking.runs import ActiveRun, active_run, end_run, start_run

__all__ = [
    "ActiveRun",
    "MolenError",
    "Predictor",
    "RunRecord",
    "__version__",
    "active_run",
    "drift_report",
    "end_run",
    "get_metric_history",
    "get_run",
    "load_model",
    "log_artifact",
    "log_dict",
    "log_figure",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_text",
    "search_runs",
    "set_tag",
    "set_tags",
    "start_run",
]

_HOMES = {
    "ActiveRun": "molen.tracking.runs",
    "active_run": "molen.tracking.runs",
    "end_run": "molen.tracking.runs",
    "start_run": "molen.tracking.runs",
    "RunRecord": "molen.entities",
    "MolenError": "molen.errors",
    "Predictor": "molen.models.predictor",
    "load_model": "molen.registry.service",
    "drift_report": "molen.monitor.drift",
    "get_metric_history": "molen.tracking.reading",
    "get_run": "molen.tracking.reading",
    "search_runs": "molen.tracking.reading",
    **{
        name: "molen.tracking.fluent"
        for name in (
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
        )
    },
}


def __getattr__(name: str) -> Any:
    if name == "data":  # the subpackage: molen.data.open(...), molen.data.path(...)
        return importlib.import_module("molen.data")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'molen' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

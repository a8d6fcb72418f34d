"""The public API is deliberate: the exported names are listed, sorted, and all resolve."""

from __future__ import annotations

import subprocess
import sys

import molen
import molen.errors

EXPECTED = [
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


def test_exported_names_are_exactly_these_and_sorted() -> None:
    assert molen.__all__ == EXPECTED
    assert sorted(molen.__all__) == molen.__all__


def test_every_exported_name_resolves() -> None:
    for name in molen.__all__:
        assert getattr(molen, name) is not None
    assert callable(molen.data.read_bytes)


def test_error_tree_is_rooted_and_exported_sorted() -> None:
    assert sorted(molen.errors.__all__) == molen.errors.__all__
    for name in molen.errors.__all__:
        assert issubclass(getattr(molen.errors, name), molen.errors.MolenError)


def test_importing_molen_stays_light() -> None:
    code = (
        "import sys, molen; heavy = {'sqlalchemy', 'pandas', 'typer', 'fsspec', 'yaml'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "[]"

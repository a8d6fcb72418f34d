"""The ``molen`` command end to end, driven as a user drives it: a subprocess in a project."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import molen
from molen.project import init_project

MOLEN = [sys.executable, "-m", "molen"]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MOLEN, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project with four recorded runs in two experiments."""
    root = tmp_path / "proj"
    init_project(root, experiment="churn")
    monkeypatch.chdir(root)
    for depth, auc, experiment in (
        (4, 0.81, "churn"),
        (8, 0.93, "churn"),
        (16, 0.88, "churn"),
        (8, 0.7, "other"),
    ):
        with molen.start_run(experiment=experiment, name=f"d{depth}-{experiment}") as run:
            run.log_params({"max_depth": depth})
            run.log_metrics({"auc": auc, "loss": 1 - auc})
    yield root


def test_version_and_help_work_anywhere(tmp_path: Path) -> None:
    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"molen {molen.__version__}"
    helped = cli("--help", cwd=tmp_path)
    assert helped.returncode == 0
    for command in ("runs", "experiments", "config", "init", "demo"):
        assert command in helped.stdout
    runs_help = cli("runs", "list", "--help", cwd=tmp_path)
    assert "--filter" in runs_help.stdout and "--sort" in runs_help.stdout


def test_help_paragraphs_flow_with_the_terminal_width(tmp_path: Path) -> None:
    """A docstring's line breaks do not reach the terminal: a wide one gets whole sentences."""
    wide = subprocess.run(
        [*MOLEN, "exp", "run", "--help"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert wide.returncode == 0, wide.stderr
    assert "a sweep (--grid, --random) runs every combination (-j side by side)" in wide.stdout
    from molen.cli.app import reflowed

    text = "First line\n    goes on.\n\n    - a list item\n    - another\n"
    assert reflowed(text) == "First line goes on.\n\n- a list item\n- another"


def test_init_creates_a_project_once(tmp_path: Path) -> None:
    first = cli("init", "new", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "new" / "molen.yaml").is_file()
    again = cli("init", "new", cwd=tmp_path)
    assert again.returncode == 4
    assert "already a molen project" in again.stderr


def test_runs_list_json_filter_and_sort(project: Path) -> None:
    result = cli("runs", "list", "--format", "json", "--sort", "-metrics.auc", cwd=project)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["metrics"]["auc"] for r in rows] == [0.93, 0.88, 0.81, 0.7]
    filtered = cli(
        "runs", "list", "-f", "json", "--filter", "metrics.auc > 0.8 and params.max_depth = '8'", cwd=project
    )
    assert [r["name"] for r in json.loads(filtered.stdout)] == ["d8-churn"]
    by_experiment = cli("runs", "list", "-f", "json", "-e", "other", cwd=project)
    assert [r["experiment"] for r in json.loads(by_experiment.stdout)] == ["other"]


def test_runs_list_table_and_csv(project: Path) -> None:
    table = cli("runs", "list", "--sort", "metrics.loss", "--limit", "2", cwd=project)
    assert table.returncode == 0, table.stderr
    assert "d8-churn" in table.stdout and "FINISHED" in table.stdout
    assert "first 2 runs" in table.stdout  # tells the user the list was cut
    rows = list(csv.DictReader(io.StringIO(cli("runs", "list", "-f", "csv", cwd=project).stdout)))
    assert len(rows) == 4
    assert {row["params.max_depth"] for row in rows} == {"4", "8", "16"}


def test_filter_syntax_error_names_the_column(project: Path) -> None:
    result = cli("runs", "list", "--filter", "metrics.auc >> 0.9", cwd=project)
    assert result.returncode == 2
    assert "column 14" in result.stderr
    assert "Traceback" not in result.stderr
    quoted = cli("runs", "list", "--filter", "params.max_depth = 8", cwd=project)
    assert quoted.returncode == 2 and "quote" in quoted.stderr


def test_runs_show_matches_the_api(project: Path) -> None:
    best = molen.search_runs(order_by="-metrics.auc")[0]
    shown = cli("runs", "show", best.id[:6], "--format", "json", cwd=project)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["id"] == best.id and data["params"] == {"max_depth": "8"} and data["metrics"]["auc"] == 0.93
    table = cli("runs", "show", best.id[:6], cwd=project)
    assert best.id in table.stdout and "max_depth" in table.stdout


def test_runs_compare_marks_the_best(project: Path) -> None:
    records = molen.search_runs(experiment="churn", order_by="params.max_depth")
    result = cli("runs", "compare", *(r.id[:8] for r in records), "--format", "json", cwd=project)
    assert result.returncode == 0, result.stderr
    rows = {row["field"]: row for row in json.loads(result.stdout)["rows"]}
    best_auc = max(records, key=lambda r: r.metrics["auc"])
    assert rows["metrics.auc"]["best"] == best_auc.id
    assert rows["metrics.loss"]["best"] == best_auc.id  # loss: lower is better
    assert rows["params.max_depth"]["differs"] is True
    assert rows["experiment"]["differs"] is False
    table = cli("runs", "compare", records[0].id[:8], records[1].id[:8], cwd=project)
    assert table.returncode == 0 and "metrics.auc" in table.stdout
    single = cli("runs", "compare", records[0].id[:8], cwd=project)
    assert single.returncode == 2 and "at least two" in single.stderr


def test_delete_and_restore(project: Path) -> None:
    victim = molen.search_runs(order_by="metrics.auc")[0]
    deleted = cli("runs", "delete", victim.id[:8], cwd=project)
    assert deleted.returncode == 0, deleted.stderr
    remaining = json.loads(cli("runs", "list", "-f", "json", cwd=project).stdout)
    assert victim.id not in {r["id"] for r in remaining} and len(remaining) == 3
    listed = json.loads(cli("runs", "list", "--deleted", "-f", "json", cwd=project).stdout)
    assert [r["id"] for r in listed] == [victim.id]
    assert cli("runs", "restore", victim.id[:8], cwd=project).returncode == 0
    assert len(json.loads(cli("runs", "list", "-f", "json", cwd=project).stdout)) == 4


def test_experiments_list(project: Path) -> None:
    data = json.loads(cli("experiments", "list", "-f", "json", cwd=project).stdout)
    assert {row["name"]: row["runs"] for row in data} == {"churn": 3, "other": 1}


def test_unknown_and_ambiguous_run_ids(project: Path) -> None:
    missing = cli("runs", "show", "ffffffffffff", cwd=project)
    assert missing.returncode == 3 and "no run" in missing.stderr
    not_hex = cli("runs", "show", "xyz", cwd=project)
    assert not_hex.returncode == 2
    from molen.workspace import open_workspace

    store = open_workspace().metadata
    experiment = store.get_or_create_experiment("churn")
    for run_id in ("aa" * 16, "aa" + "bb" * 15):
        store.create_run(run_id=run_id, experiment_id=experiment.id, name="twin", start_time=1)
        store.end_run(run_id, "FINISHED", 2)
    ambiguous = cli("runs", "show", "aa", cwd=project)
    assert ambiguous.returncode == 4 and "give more characters" in ambiguous.stderr
    assert cli("runs", "show", "aab", cwd=project).returncode == 0


def test_errors_outside_a_project_and_with_unreachable_stores(tmp_path: Path) -> None:
    outside = cli("runs", "list", cwd=tmp_path)
    assert outside.returncode == 3
    assert "molen init" in outside.stderr and len(outside.stderr.strip().splitlines()) == 1
    down = cli(
        "runs",
        "list",
        cwd=tmp_path,
        env={"MOLEN_TRACKING_URI": "postgresql+psycopg://u:hunter2@127.0.0.1:9/db"},
    )
    assert down.returncode == 5
    assert "cannot reach the metadata store" in down.stderr
    assert "hunter2" not in down.stderr and "Traceback" not in down.stderr
    bad_url = cli("runs", "list", cwd=tmp_path, env={"MOLEN_TRACKING_URI": "not a url"})
    assert bad_url.returncode == 2 and "tracking.uri" in bad_url.stderr


def test_a_database_from_a_newer_molen_is_refused(project: Path) -> None:
    import sqlite3

    with sqlite3.connect(project / ".molen" / "molen.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    from molen.stores.metadata import close_metadata_stores

    close_metadata_stores()
    result = cli("runs", "list", cwd=project)
    assert result.returncode == 5
    assert "newer molen" in result.stderr


def test_the_flag_beats_the_environment(project: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    result = cli(
        "--tracking-uri",
        f"sqlite:///{other}",
        "runs",
        "list",
        "-f",
        "json",
        cwd=project,
        env={"MOLEN_TRACKING_URI": "sqlite:////nonexistent/dir/x.db"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []  # a fresh, empty store: the flag won
    shown = json.loads(
        cli("--tracking-uri", f"sqlite:///{other}", "config", "show", "-f", "json", cwd=project).stdout
    )
    assert shown["tracking.uri"]["source"] == "flag"

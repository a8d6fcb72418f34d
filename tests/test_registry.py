"""The registry (versions, aliases, history, rollback, deletion), lineage both ways, the quality
gate and promotion: on SQLite + a local folder and on PostgreSQL + S3, and through the CLI."""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import molen
from conftest import molen_server
from molen.errors import ConflictError, InvalidNameError, InvalidValueError, NotFoundError, UsageError
from molen.project import init_project
from molen.registry import service
from molen.registry.compare import diff_versions
from molen.registry.gate import GateRule, load_rules, promote, run_gate, summary_markdown
from molen.registry.lineage import data_lineage, model_lineage
from molen.stores.metadata import close_metadata_stores
from molen.workspace import open_workspace

pytestmark = pytest.mark.usefixtures("no_importance")

BACKENDS = ["local", "team", "server"]


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture(params=BACKENDS)
def project(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A git project; ``team`` stores metadata in PostgreSQL and objects in S3; ``server``
    reaches both through a `molen server` (over SQLite and a folder) by HTTP."""
    root = tmp_path / "proj"
    init_project(root, experiment="churn")
    (root / ".gitignore").write_text(".molen/\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "first")
    monkeypatch.chdir(root)
    if request.param == "team":
        monkeypatch.setenv("MOLEN_TRACKING_URI", request.getfixturevalue("postgres_url"))
        monkeypatch.setenv("MOLEN_OBJECTS_URL", f"s3://{request.getfixturevalue('s3_bucket')}/molen")
        monkeypatch.setenv("MOLEN_OBJECTS_S3_ENDPOINT_URL", request.getfixturevalue("s3_endpoint"))
    with contextlib.ExitStack() as stack:
        if request.param == "server":
            served = stack.enter_context(
                molen_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "objects")
            )
            monkeypatch.setenv("MOLEN_TRACKING_URI", served)
        yield root
        while (run := molen.active_run()) is not None:
            run.end()
        close_metadata_stores()


def data(seed: int = 0, rows: int = 300) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"tenure": rng.integers(0, 72, rows), "charges": rng.normal(70.0, 20.0, rows)})
    noise = rng.normal(0, 8, rows)
    return frame, ((frame["tenure"] + noise) < 25).astype(int)


def train(auc: float, *, c: float = 1.0, name: str = "churn", inputs: list[str] | None = None) -> Any:
    frame, target = data()
    with molen.start_run() as run:
        run.log_params({"C": c})
        for path in inputs or []:
            run.log_input(path)
        run.log_metric("auc", auc)
        run.log_metric("log_loss", 1 - auc)
        return run.log_model(
            LogisticRegression(C=c).fit(frame, target), name, reference=frame, y_reference=target
        )


# -- versions and aliases -------------------------------------------------------------------------------


def test_versions_count_up_and_aliases_move_with_history(project: Path) -> None:
    assert [train(0.8).version.version for _ in range(3)] == [1, 2, 3]
    models = service.list_models()
    assert [(m.name, m.latest_version, m.version_count) for m in models] == [("churn", 3, 3)]
    service.set_alias("churn", 1, "production")
    service.set_alias("churn", 2, "production")
    service.set_alias("churn", 3, "staging")
    assert service.get_version("churn@production").version == 2
    assert service.get_version("churn@latest").version == 3
    assert service.list_models()[0].aliases == {"production": 2, "staging": 3}
    history = service.alias_history("churn", "production")
    assert [(e.previous, e.version, e.action) for e in history] == [(None, 1, "set"), (1, 2, "set")]
    assert all(e.user for e in history) and history[0].time <= history[1].time
    versions = service.list_versions("churn")
    assert [(v.version, v.aliases) for v in versions] == [(3, ("staging",)), (2, ("production",)), (1, ())]


def test_rollback_walks_back_through_the_holders(project: Path) -> None:
    for _ in range(3):
        train(0.8)
    for version in (1, 2, 3):
        service.set_alias("churn", version, "production")
    assert service.rollback_alias("churn", "production").version == 2
    assert service.rollback_alias("churn", "production").version == 1
    with pytest.raises(ConflictError, match="no previous version"):
        service.rollback_alias("churn", "production")
    actions = [e.action for e in service.alias_history("churn", "production")]
    assert actions == ["set", "set", "set", "rollback", "rollback"]
    with pytest.raises(NotFoundError, match="no alias 'canary'"):
        service.rollback_alias("churn", "canary")


def test_delete_is_refused_while_an_alias_points_at_the_version(project: Path) -> None:
    train(0.8)
    train(0.8)
    service.set_alias("churn", 1, "production")
    with pytest.raises(ConflictError, match=r"churn/1 is still @production; move the alias first"):
        service.delete_version("churn", 1)
    service.set_alias("churn", 2, "production")
    service.delete_version("churn", 1)
    assert [v.version for v in service.list_versions("churn")] == [2]
    with pytest.raises(NotFoundError, match="churn has no version 1; versions: 2"):
        molen.load_model("churn/1")
    with pytest.raises(ConflictError, match="deleted"):
        service.rollback_alias("churn", "production")
    assert train(0.8).version.version == 3  # numbers are never reused


def test_removing_an_alias_is_recorded(project: Path) -> None:
    train(0.8)
    service.set_alias("churn", 1, "staging")
    event = service.remove_alias("churn", "staging")
    assert (event.previous, event.version, event.action) == (1, None, "remove")
    with pytest.raises(NotFoundError, match="no alias 'staging'"):
        molen.load_model("churn@staging")


def test_names_and_aliases_are_checked(project: Path) -> None:
    train(0.8)
    with pytest.raises(InvalidNameError, match="alias 'latest'"):
        service.set_alias("churn", 1, "latest")
    with pytest.raises(InvalidNameError, match="alias"):
        service.set_alias("churn", 1, "prod uction")
    with pytest.raises(NotFoundError, match="churn has no version 9"):
        service.set_alias("churn", 9, "production")
    with pytest.raises(UsageError, match="not a model URI"):
        service.parse_model_uri("")
    with pytest.raises(UsageError, match="the version after '/' is a number"):
        service.parse_model_uri("churn//")


def test_concurrent_registrations_get_distinct_versions(project: Path) -> None:
    logged = train(0.8, name=None)  # type: ignore[arg-type]
    workspace = open_workspace()
    assert workspace.metadata is not None  # opened once, before the threads
    found: list[int] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            found.append(service.register_run(logged.run_id, "shared", workspace=workspace).version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(found) == [1, 2, 3, 4, 5, 6]


def test_concurrent_alias_moves_keep_a_consistent_history(project: Path) -> None:
    for _ in range(4):
        train(0.8)
    workspace = open_workspace()
    errors: list[BaseException] = []

    def move(version: int) -> None:
        try:
            for _ in range(3):
                service.set_alias("churn", version, "production", workspace=workspace)
                service.rollback_alias("churn", "production", workspace=workspace)
        except ConflictError:
            pass  # nothing left to roll back to at that moment: a fair answer
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=move, args=(version,)) for version in (1, 2, 3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    history = service.alias_history("churn", "production")
    assert len(history) >= 4
    for before, after in itertools.pairwise(history):
        assert after.previous == before.version  # no move was based on a stale reading
    assert service.get_version("churn@production").version == history[-1].version


def test_a_process_killed_while_logging_a_model_registers_nothing(project: Path) -> None:
    import os
    import signal
    import time

    marker = project / "predicting"
    script = project / "slow.py"
    script.write_text(
        "import pathlib, time\n"
        "import pandas as pd\n"
        "import molen\n"
        "class Slow:\n"
        "    def predict(self, frame):\n"
        f"        pathlib.Path({str(marker)!r}).touch()\n"
        "        time.sleep(60)\n"
        "        return frame['x']\n"
        "with molen.start_run() as run:\n"
        "    run.log_model(Slow(), 'slow', reference=pd.DataFrame({'x': [1.0, 2.0]}))\n"
    )
    child = subprocess.Popen([sys.executable, str(script)], cwd=project)
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), "the child never reached predict"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert service.list_models() == []
    with pytest.raises(NotFoundError, match="no registered model 'slow'"):
        molen.load_model("slow/1")
    (run,) = molen.search_runs()
    assert not any(a.path.endswith("molen-model.json") for a in molen.get_run(run.id).artifacts)
    assert train(0.8, name="slow").version.version == 1  # the store is usable as before


def test_register_a_run_by_prefix_and_refuse_a_run_without_a_model(project: Path) -> None:
    logged = train(0.8, name=None)  # type: ignore[arg-type]
    version = service.register_run(logged.run_id[:8], "churn")
    assert (version.name, version.version, version.run_id) == ("churn", 1, logged.run_id)
    with molen.start_run() as run:
        pass
    with pytest.raises(NotFoundError, match="it logged no model"):
        service.register_run(run.id, "churn")
    with pytest.raises(NotFoundError, match="logged models at: model"):
        service.register_run(logged.run_id, "churn", artifact_path="other")


# -- diff and lineage ---------------------------------------------------------------------------------


def test_diff_shows_metrics_params_data_and_signature(project: Path) -> None:
    (project / "train.csv").write_text("a,b\n1,2\n")
    train(0.80, c=1.0, inputs=["train.csv"])
    (project / "train.csv").write_text("a,b\n1,2\n3,4\n")
    frame, target = data()
    wider = frame.assign(plan=np.where(frame["tenure"] > 30, "pro", "basic"))
    with molen.start_run() as run:
        run.log_params({"C": 0.5})
        run.log_input("train.csv")
        run.log_metric("auc", 0.85)
        from sklearn.compose import make_column_transformer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder

        pipeline = make_pipeline(
            make_column_transformer((OneHotEncoder(), ["plan"]), remainder="passthrough"),
            LogisticRegression(),
        )
        run.log_model(pipeline.fit(wider, target), "churn", reference=wider)
    diff = diff_versions("churn", 1, 2)
    auc = next(row for row in diff["metrics"] if row["key"] == "auc")
    assert auc["delta"] == pytest.approx(0.05)
    assert {"key": "C", "a": "1.0", "b": "0.5"} in diff["params"]
    assert [row["path"] for row in diff["data"]] == ["train.csv"]
    assert diff["signature"] == [{"column": "plan", "change": "added (string)"}]


def test_lineage_from_model_to_data_and_back(project: Path) -> None:
    from molen.data.tracked import DataSession

    (project / "data").mkdir()
    (project / "data" / "raw.csv").write_text("tenure,charges\n1,2\n")
    DataSession(open_workspace()).add([project / "data" / "raw.csv"])
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "data")
    logged = train(0.8, inputs=["data/raw.csv"])
    service.set_alias("churn", 1, "production")
    tree = model_lineage("churn@production")
    assert tree["model"]["name"] == "churn" and tree["model"]["aliases"] == ["production"]
    assert tree["run"]["id"] == logged.run_id
    (item,) = tree["data"]
    assert (item["path"], item["pointer"], item["role"]) == ("data/raw.csv", "data/raw.csv.molen", "input")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True
    ).stdout.strip()
    assert tree["code"]["commit"] == commit
    assert tree["environment"]["scikit-learn"]
    back = data_lineage("data/raw.csv.molen")
    assert back["data"]["digest"] == item["digest"]
    assert [run["id"] for run in back["runs"]] == [logged.run_id]
    assert back["models"] == [
        {"name": "churn", "version": 1, "aliases": ["production"], "run_id": logged.run_id}
    ]
    assert data_lineage("data/raw.csv")["data"]["digest"] == item["digest"]
    with pytest.raises(NotFoundError, match="no such pointer file"):
        data_lineage("data/missing.csv")


# -- the gate ----------------------------------------------------------------------------------------


def test_gate_on_recorded_metrics(project: Path) -> None:
    train(0.80)
    verdict = run_gate("churn", candidate="1", against="production")
    assert verdict["passed"] and "no model at churn@production yet" in verdict["reason"]
    service.set_alias("churn", 1, "production")
    train(0.78)
    worse = run_gate("churn", candidate="latest", against="production", rules=[GateRule("auc")])
    assert not worse["passed"]
    assert worse["rules"][0]["delta"] == pytest.approx(-0.02)
    assert "auc changed by -0.02" in worse["reason"]
    tolerant = run_gate("churn", rules=[GateRule("auc", "higher", -0.05)])
    assert tolerant["passed"]
    lower = run_gate("churn", rules=[GateRule("log_loss", "lower", 0.0)])
    assert not lower["passed"]  # log_loss rose from 0.20 to 0.22
    stored = open_workspace().metadata.registry.verdicts("churn", 2)
    assert [record.passed for record in stored] == [False, True, False]
    assert stored[0].verdict["rules"][0]["metric"] == "auc"
    summary = summary_markdown(worse)
    assert "❌ failed" in summary and "| auc | higher | 0.78 | 0.8 |" in summary


def test_gate_scores_both_models_on_holdout_data(project: Path) -> None:
    frame, target = data(seed=0)
    with molen.start_run() as run:
        run.log_model(LogisticRegression().fit(frame, target), "churn", reference=frame)
    service.set_alias("churn", 1, "production")
    with molen.start_run() as run:  # a model that ignores tenure, its strongest feature
        run.log_model(
            LogisticRegression().fit(frame[["charges"]].assign(tenure=0), target), "churn", reference=frame
        )
    holdout, truth = data(seed=1)
    holdout.assign(churned=truth).to_parquet(project / "holdout.parquet")
    verdict = run_gate("churn", data=project / "holdout.parquet", target="churned", rules=[GateRule("auc")])
    assert verdict["mode"] == "holdout" and verdict["data"]["rows"] == 300
    candidate, champion = verdict["metrics"]["candidate"], verdict["metrics"]["champion"]
    assert set(candidate) == {"accuracy", "precision", "recall", "f1", "auc", "roc_auc", "log_loss"}
    assert champion["auc"] > 0.8 > candidate["auc"]
    assert not verdict["passed"]
    with pytest.raises(UsageError, match="--data needs --target"):
        run_gate("churn", data=project / "holdout.parquet")
    with pytest.raises(InvalidValueError, match="has no column 'nope'"):
        run_gate("churn", data=project / "holdout.parquet", target="nope")


def test_rules_file(project: Path, tmp_path: Path) -> None:
    rules = tmp_path / "gate.yaml"
    rules.write_text(
        "rules:\n"
        "  - metric: auc\n    min_delta: -0.05\n    threshold: 0.75\n"
        "  - metric: log_loss\n    max_relative_drop: 0.05\n    min_delta: null\n"
    )
    loaded = load_rules(rules)
    assert loaded == [
        GateRule("auc", "higher", -0.05, None, 0.75),
        GateRule("log_loss", "lower", None, 0.05, None),
    ]
    train(0.80)
    service.set_alias("churn", 1, "production")
    train(0.79)  # auc -0.01 (tolerated); log_loss 0.20 -> 0.21: 5 % worse, exactly the limit
    assert run_gate("churn", rules=loaded)["passed"]
    train(0.70)  # auc below the 0.75 threshold; log_loss 50 % worse
    failed = run_gate("churn", rules=loaded)
    assert [check["passed"] for check in failed["rules"]] == [False, False]
    assert "is not at least 0.75" in failed["rules"][0]["reason"]
    for text, message in [
        ("rules: []\n", "at least one rule"),
        ("rules:\n  - min_delta: 1\n", "needs 'metric: NAME'"),
        ("rules:\n  - metric: auc\n    direction: up\n", "'higher' or 'lower'"),
        ("rules:\n  - metric: auc\n    slack: 1\n", "unknown field 'slack'"),
        ("rules: [\n", "not valid YAML"),
    ]:
        rules.write_text(text)
        with pytest.raises(InvalidValueError, match=message):
            load_rules(rules)


def test_promote_with_the_gate(project: Path) -> None:
    train(0.80)
    verdict, event = promote("churn", 1, to="production", gate=True)
    assert verdict is not None and verdict["passed"] and event.version == 1
    train(0.70)
    verdict, event = promote("churn", 2, to="production", gate=True)
    assert verdict is not None and not verdict["passed"] and event is None
    assert service.get_version("churn@production").version == 1
    _, event = promote("churn", 2, to="production")  # no gate: moved as asked
    assert (event.previous, event.version) == (1, 2)


# -- the CLI, as a user runs it --------------------------------------------------------------------------


def molen_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "molen", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("project", ["local"], indirect=True)
def test_cli_registry_flow(project: Path) -> None:
    train(0.80)
    train(0.85)
    listed = molen_cli("models", "list", cwd=project)
    assert listed.returncode == 0 and "churn" in listed.stdout
    moved = molen_cli("models", "alias", "churn", "1", "production", cwd=project)
    assert moved.returncode == 0 and "churn@production → version 1" in moved.stdout
    shown = molen_cli("models", "show", "churn@production", cwd=project)
    assert shown.returncode == 0 and "tenure" in shown.stdout and "@production" in shown.stdout
    card = molen_cli("models", "show", "churn/1", "-o", "card.html", cwd=project)
    assert card.returncode == 0 and (project / "card.html").read_text().startswith("<!doctype html>")
    gate = molen_cli("gate", "churn", "--candidate", "2", "--against", "production", cwd=project)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "PASSED" in gate.stdout
    assert json.loads((project / "gate-verdict.json").read_text())["passed"] is True
    assert "✅ passed" in (project / "gate-summary.md").read_text()
    strict = molen_cli("gate", "churn", "--candidate", "2", "--min-delta", "0.1", "-o", "v.json", cwd=project)
    assert strict.returncode == 1 and "FAILED" in strict.stdout
    refused = molen_cli("models", "promote", "churn", "2", "--gate", "--min-delta", "0.1", cwd=project)
    assert refused.returncode == 1 and "Not promoted" in refused.stdout
    promoted = molen_cli("models", "promote", "churn", "2", "--gate", cwd=project)
    assert promoted.returncode == 0 and "Promoted churn/2 to @production (was 1)" in promoted.stdout
    delete = molen_cli("models", "delete", "churn/2", cwd=project)
    assert delete.returncode == 4 and "still @production" in delete.stderr
    assert delete.stderr.count("\n") == 1  # one line, no traceback
    rollback = molen_cli("models", "rollback", "churn", "production", cwd=project)
    assert rollback.returncode == 0 and "version 2 → 1" in rollback.stdout
    diff = molen_cli("models", "diff", "churn", "1", "2", "-f", "json", cwd=project)
    assert json.loads(diff.stdout)["metrics"][0]["key"] == "auc"
    lineage = molen_cli("lineage", "churn@production", cwd=project)
    assert lineage.returncode == 0 and "model churn/1 @production" in lineage.stdout
    as_json = json.loads(molen_cli("lineage", "churn/1", "-f", "json", cwd=project).stdout)
    assert as_json["model"]["version"] == 1
    missing = molen_cli("models", "show", "nope/1", cwd=project)
    assert missing.returncode == 3 and "no registered model 'nope'" in missing.stderr


def test_the_card_is_rendered_with_the_runs_metrics_as_they_are_now(project: Path) -> None:
    frame, target = data()
    with molen.start_run() as run:
        run.log_model(LogisticRegression().fit(frame, target), "churn", reference=frame)
        run.log_metric("late_auc", 0.77)  # after log_model: not in the stored card
    service.set_alias("churn", 1, "production")
    markdown = service.model_card("churn@production")
    assert "| late_auc | 0.77 |" in markdown and "# Model card: churn / version 1" in markdown
    assert "@production" in markdown
    page = service.model_card("churn/1", html=True)
    assert page.startswith("<!doctype html>") and "late_auc" in page

"""Pipelines: stages in molen.yaml, molen.lock, molen repro / status / dag, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from molen.config import project_config
from molen.data.tracked import DataSession
from molen.errors import InvalidValueError
from molen.pipeline.graph import render_dag
from molen.pipeline.lock import read_lock
from molen.pipeline.repro import ReproResult, repro
from molen.pipeline.spec import Pipeline, load_pipeline
from molen.project import Project, init_project
from molen.workspace import open_workspace

MOLEN = [sys.executable, "-m", "molen"]

PREPARE = """
import json, pathlib
rows = pathlib.Path("data/raw.csv").read_text().splitlines()[1:]
pathlib.Path("data/prepared").mkdir(parents=True, exist_ok=True)
pathlib.Path("data/prepared/rows.txt").write_text("\\n".join(rows) + "\\n")
"""
TRAIN = """
import json, pathlib, yaml
params = yaml.safe_load(open("params.yaml"))["train"]
rows = [float(x.split(",")[1]) for x in pathlib.Path("data/prepared/rows.txt").read_text().split()]
model = {"weight": sum(rows) * params["lr"], "depth": params["max_depth"]}
pathlib.Path("model.json").write_text(json.dumps(model))
with open("runs.log", "a") as log:
    log.write("train\\n")
"""
EVALUATE = """
import json, pathlib
model = json.loads(pathlib.Path("model.json").read_text())
metrics = {"score": model["weight"] / 10, "nested": {"depth": model["depth"]}}
pathlib.Path("metrics.json").write_text(json.dumps(metrics))
import molen
with molen.start_run() as run:  # attaches to the pipeline's run
    run.log_metric("from_script", 7.0)
"""
PIPELINE = """
stages:
  prepare:
    cmd: python prepare.py
    deps: [data/raw.csv, prepare.py]
    outs: [data/prepared]
  train:
    cmd: python train.py
    deps: [data/prepared, train.py]
    params: [train.lr, train.max_depth]
    outs: [model.json]
  evaluate:
    cmd: python evaluate.py
    deps: [model.json, evaluate.py]
    metrics: [metrics.json]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    root = tmp_path / "proj"
    project = init_project(root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
    (root / "data").mkdir()
    (root / "data" / "raw.csv").write_text("id,x\n1,2\n2,3\n")
    (root / "prepare.py").write_text(PREPARE)
    (root / "train.py").write_text(TRAIN)
    (root / "evaluate.py").write_text(EVALUATE)
    (root / "params.yaml").write_text("train:\n  lr: 0.5\n  max_depth: 4\n")
    with open(project.config_path, "a") as config:
        config.write(PIPELINE)
    yield project


def session() -> DataSession:
    return DataSession(open_workspace())


def pipeline(project: Project) -> Pipeline:
    return load_pipeline(project, project_config(project))


def run(project: Project, *targets: str, **options: object) -> ReproResult:
    return repro(session(), pipeline(project), list(targets) or None, **options)  # type: ignore[arg-type]


def actions(result: ReproResult) -> dict[str, str]:
    return {outcome.name: outcome.action for outcome in result.outcomes}


def molen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MOLEN, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- the pipeline file


def test_stages_are_ordered_by_their_files(project: Project) -> None:
    found = pipeline(project)
    assert found.order() == ["prepare", "train", "evaluate"]
    assert found.order(["train"]) == ["prepare", "train"]
    assert found.order(["train"], downstream=True) == ["prepare", "train", "evaluate"]
    assert found.upstream["evaluate"] == {"train"}
    with pytest.raises(InvalidValueError, match="no stage named 'nope'"):
        found.order(["nope"])


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        (
            "a: {cmd: x, deps: [b.txt], outs: [a.txt]}\n  b: {cmd: y, deps: [a.txt], outs: [b.txt]}",
            "form a cycle",
        ),
        ("a: {cmd: x, outs: [m.pkl]}\n  b: {cmd: y, outs: [m.pkl]}", "stage b: m.pkl is written by stage a"),
        ("a: {cmd: x, outs: [models]}\n  b: {cmd: y, outs: [models/m.pkl]}", "inside out models"),
        ("a: {cmd: x, out: [m.pkl]}", "stage a: unknown field 'out'"),
        ("a: {deps: [x]}", "stage a: cmd must be"),
        ("a: {cmd: x, deps: [../elsewhere.csv]}", "stage a: deps: ../elsewhere.csv is outside the project"),
        ("a: {cmd: x, outs: [.molen/x]}", "inside .molen/"),
        ("a: {cmd: x, params: [{p.yaml: [1]}]}", "params of p.yaml must be a list of keys"),
    ],
)
def test_a_bad_pipeline_is_refused_with_the_stage_and_field(
    project: Project, stages: str, message: str
) -> None:
    project.config_path.write_text(f"stages:\n  {stages}\n")
    with pytest.raises(InvalidValueError, match=message):
        pipeline(project)


def test_an_unknown_param_key_is_refused_when_read(project: Project) -> None:
    (project.root / "params.yaml").write_text("train:\n  lr: 0.5\n")
    with pytest.raises(
        InvalidValueError, match=r"stage train: param train\.max_depth is not in params\.yaml"
    ):
        run(project)


def test_dag_in_three_forms(project: Project) -> None:
    found = pipeline(project)
    text = render_dag(found)
    assert text.splitlines()[0] == "prepare" and "train  ← prepare" in text
    mermaid = render_dag(found, "mermaid")
    assert mermaid.startswith("flowchart TD") and "s_prepare --> s_train" in mermaid
    dot = render_dag(found, "dot")
    assert '"train" -> "evaluate";' in dot and dot.startswith("digraph")


# --------------------------------------------------------------------------- running


def test_repro_runs_what_changed_and_records_it(project: Project) -> None:
    first = run(project)
    assert actions(first) == {"prepare": "ran", "train": "ran", "evaluate": "ran"}
    assert first.run_id is not None
    lock = read_lock(project.root)
    assert set(lock) == {"prepare", "train", "evaluate"}
    assert lock["train"].params == {"train.lr": 0.5, "train.max_depth": 4}
    assert set(lock["evaluate"].outs) == {"metrics.json"}
    assert actions(run(project)) == {"prepare": "up-to-date", "train": "up-to-date", "evaluate": "up-to-date"}

    (project.root / "params.yaml").write_text("train:\n  lr: 0.25\n  max_depth: 4\n")
    again = run(project)
    assert actions(again) == {"prepare": "up-to-date", "train": "ran", "evaluate": "ran"}
    assert again.outcomes[1].reasons == ["param train.lr changed: 0.5 → 0.25"]

    import molen

    recorded = molen.get_run(again.run_id)
    assert recorded.params["train.lr"] == "0.25"
    assert recorded.metrics["score"] == pytest.approx(0.125) and recorded.metrics["nested.depth"] == 4
    assert recorded.metrics["from_script"] == 7.0  # logged by the stage's own start_run()
    assert {(i.path, i.role) for i in recorded.inputs} >= {
        ("model.json", "output"),
        ("data/prepared", "input"),
    }


def test_a_failing_stage_stops_its_descendants_and_stores_nothing_half_written(project: Project) -> None:
    (project.root / "train.py").write_text(
        "import pathlib, sys\npathlib.Path('model.json').write_text('half')\nsys.exit(3)\n"
    )
    result = run(project)
    assert actions(result) == {"prepare": "ran", "train": "failed", "evaluate": "skipped"}
    assert "exited with 3" in result.failed[0].error
    assert set(read_lock(project.root)) == {"prepare"}  # the completed stage keeps its entry
    from molen.hashing import hash_bytes

    assert not open_workspace().objects.exists(hash_bytes(b"half"))
    import molen

    assert molen.get_run(result.run_id).status == "FAILED"


def test_the_run_cache_restores_outs_instead_of_rerunning(project: Project) -> None:
    run(project)
    (project.root / "params.yaml").write_text("train:\n  lr: 0.25\n  max_depth: 4\n")
    run(project)
    (project.root / "params.yaml").write_text("train:\n  lr: 0.5\n  max_depth: 4\n")  # back again
    result = run(project)
    assert actions(result)["train"] == "restored"
    assert (project.root / "runs.log").read_text().count("train") == 2  # not run a third time
    assert json.loads((project.root / "model.json").read_text())["weight"] == 2.5
    # restored as a run would leave them: outs ignored by git, the metrics file kept in git
    ignored = (
        (project.root / ".gitignore").read_text().split() if (project.root / ".gitignore").exists() else []
    )
    assert "/model.json" in ignored and "/metrics.json" not in ignored
    assert run(project, force=True).outcomes[1].action == "ran"  # --force runs anyway


def test_a_missing_dep_nobody_makes_is_named(project: Project) -> None:
    (project.root / "data" / "raw.csv").unlink()
    result = run(project)
    assert result.failed[0].name == "prepare"
    assert "dep data/raw.csv does not exist and no stage writes it" in result.failed[0].error


def test_dry_run_changes_nothing(project: Project) -> None:
    result = run(project, dry=True)
    assert set(actions(result).values()) == {"would-run"}
    assert not (project.root / "molen.lock").exists() and result.run_id is None


def test_independent_stages_run_side_by_side(project: Project) -> None:
    stamp = (
        "import sys, time, pathlib; t = time.time(); time.sleep(0.5); "
        "pathlib.Path(sys.argv[1]).write_text(f'{t} {time.time()}')"
    )
    (project.root / "stamp.py").write_text(stamp)
    project.config_path.write_text(
        "stages:\n"
        "  left: {cmd: python stamp.py left.txt, deps: [stamp.py], outs: [left.txt]}\n"
        "  right: {cmd: python stamp.py right.txt, deps: [stamp.py], outs: [right.txt]}\n"
    )
    run(project, jobs=2)
    (a0, a1), (b0, b1) = (
        map(float, (project.root / f).read_text().split()) for f in ("left.txt", "right.txt")
    )
    assert a0 < b1 and b0 < a1  # the two stages' run times overlap


def test_status_tells_which_stages_are_stale_and_why(project: Project) -> None:
    root = project.root
    out = molen("status", cwd=root)
    assert out.returncode == 0 and "never ran" in out.stdout
    assert molen("repro", cwd=root).returncode == 0
    assert molen("status", cwd=root).stdout.count("up to date") == 3
    (root / "evaluate.py").write_text(EVALUATE + "\n# changed\n")
    stale = molen("status", cwd=root).stdout
    assert "dep evaluate.py changed" in stale and stale.count("up to date") == 2


def test_the_cli(project: Project) -> None:
    root = project.root
    first = molen("repro", "-j", "2", cwd=root)
    assert first.returncode == 0, first.stderr
    assert "ran" in first.stdout and "recorded as run" in first.stdout
    assert "up-to-date" in molen("repro", cwd=root).stdout
    assert "flowchart TD" in molen("dag", "--format", "mermaid", cwd=root).stdout
    (root / "train.py").write_text("import sys\nsys.exit(2)\n")
    failed = molen("repro", cwd=root)
    assert failed.returncode == 1 and "exited with 2" in failed.stdout
    assert "Traceback" not in failed.stderr
    bad = molen("repro", "nope", cwd=root)
    assert bad.returncode == 2 and "no stage named 'nope'" in bad.stderr


def test_repro_with_nothing_to_do_records_no_run(project: Project) -> None:
    run(project)
    assert run(project).run_id is None


def test_a_teammate_gets_outs_and_run_cache_through_the_remote(project: Project, tmp_path: Path) -> None:
    import shutil

    from molen.data.remotes import add_remote

    add_remote(project, "origin", str(tmp_path / "remote"))
    run(project)  # lr 0.5
    (project.root / "params.yaml").write_text("train:\n  lr: 0.25\n  max_depth: 4\n")
    run(project)  # lr 0.25: what molen.lock records
    assert "/model.json" in (project.root / ".gitignore").read_text().splitlines()
    pushed = molen("data", "push", cwd=project.root)
    assert pushed.returncode == 0, pushed.stderr

    mate = tmp_path / "mate"  # a clone: the committed files only
    mate.mkdir()
    for name in ("molen.yaml", "molen.lock", "prepare.py", "train.py", "evaluate.py", "data/raw.csv"):
        (mate / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(project.root / name, mate / name)
    (mate / "params.yaml").write_text("train:\n  lr: 0.5\n  max_depth: 4\n")  # the first variant
    pulled = molen("data", "pull", cwd=mate)
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads((mate / "model.json").read_text())["weight"] == 1.25  # the locked outs
    again = molen("repro", cwd=mate)
    assert again.returncode == 0, again.stderr
    assert "restored  train" in again.stdout and "restored  evaluate" in again.stdout
    assert not (mate / "runs.log").exists()  # train never ran on the teammate's machine
    assert json.loads((mate / "model.json").read_text())["weight"] == 2.5


# --------------------------------------------------------------------------- experiments


def test_an_experiment_runs_in_a_copy_and_can_be_applied(project: Project) -> None:
    root = project.root
    assert molen("repro", cwd=root).returncode == 0
    before = (root / "params.yaml").read_text()
    done = molen("exp", "run", "-S", "train.lr=0.1", "--name", "low-lr", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "params.yaml").read_text() == before  # the workspace is untouched
    assert json.loads((root / "model.json").read_text())["weight"] == 2.5
    assert not list((project.state_dir / "exps").iterdir())  # the working copy is gone
    import molen as api

    (experiment,) = api.search_runs("name = 'low-lr'")
    assert experiment.tags["molen.exp.overrides"] == "train.lr=0.1"
    assert experiment.params["train.lr"] == "0.1" and experiment.metrics["score"] == pytest.approx(0.05)

    shown = json.loads(molen("exp", "show", "-f", "json", "--only-changed", cwd=root).stdout)
    assert [row["params"] for row in shown] == [{"train.lr": "0.1"}, {"train.lr": "0.5"}]

    applied = molen("exp", "apply", experiment.id[:10], cwd=root)
    assert applied.returncode == 0, applied.stderr
    assert "lr: 0.1" in (root / "params.yaml").read_text()
    assert json.loads((root / "model.json").read_text())["weight"] == pytest.approx(0.5)
    assert "up-to-date" in molen("repro", cwd=root).stdout  # workspace, outs and lock agree


def test_a_sweep_runs_every_combination_under_one_parent(project: Project) -> None:
    root = project.root
    done = molen(
        "exp", "run", "--grid", "train.lr=0.1,0.2", "--grid", "train.max_depth=2,3", "-j", "2", cwd=root
    )
    assert done.returncode == 0, done.stdout + done.stderr
    import molen as api

    children = api.search_runs("tags.`molen.exp.overrides` like 'train.lr=%'")
    assert len(children) == 4
    assert len({run.parent_id for run in children}) == 1 and children[0].parent_id is not None
    assert {(r.params["train.lr"], r.params["train.max_depth"]) for r in children} == {
        ("0.1", "2"),
        ("0.1", "3"),
        ("0.2", "2"),
        ("0.2", "3"),
    }
    assert all(r.tags["molen.command"] == "molen repro" for r in children)  # not `__main__.py repro`
    sampled = molen("exp", "run", "--grid", "train.lr=0.1,0.2,0.3", "--random", "2", "--seed", "1", cwd=root)
    assert sampled.returncode == 0 and sampled.stdout.count("ok  ") == 2


def test_bad_experiment_input_is_one_clear_line(project: Project) -> None:
    root = project.root
    bad = molen("exp", "run", "-S", "train.nope=1", cwd=root)
    assert bad.returncode == 2 and "param train.nope is not in params.yaml" in bad.stderr
    assert molen("exp", "run", "-S", "novalue", cwd=root).returncode == 2
    assert molen("exp", "apply", "ffffffff", cwd=root).returncode == 3


# --------------------------------------------------------------------------- verify


def _commit(root: Path, message: str) -> None:
    for command in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "t@example.com"],
        ["git", "config", "user.name", "t"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", message],
    ):
        subprocess.run(command, cwd=root, check=True, capture_output=True)


def test_verify_rebuilds_a_past_run_from_its_commit(project: Project) -> None:
    root = project.root
    (root / ".gitignore").write_text(".molen/\n")
    _commit(root, "pipeline")
    first = molen("exp", "run", "-S", "train.lr=0.1", cwd=root)  # params not in the commit
    assert first.returncode == 0, first.stderr
    import molen as api

    (experiment,) = api.search_runs("tags.`molen.exp.overrides` = 'train.lr=0.1'")
    (root / "train.py").write_text("raise SystemExit('the workspace moved on')\n")  # not what ran
    checked = molen("repro", "--verify", experiment.id[:10], cwd=root)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "reproduces" in checked.stdout
    assert (root / "train.py").read_text().startswith("raise")  # the workspace is untouched


def test_verify_reports_what_does_not_reproduce(project: Project) -> None:
    root = project.root
    (root / ".gitignore").write_text(".molen/\n")
    (root / "train.py").write_text(
        TRAIN.replace('params["lr"]', 'params["lr"] * __import__("random").random()')
    )
    _commit(root, "a training that is not deterministic")
    assert molen("repro", cwd=root).returncode == 0
    import molen as api

    (original,) = api.search_runs("name = 'repro'")
    checked = molen("repro", "--verify", original.id, "--tolerance", "0", cwd=root)
    assert checked.returncode == 1
    assert "does not reproduce" in checked.stdout
    assert (
        "out model.json (stage train) differs" in checked.stdout and "metric score differs" in checked.stdout
    )
    no_lock = molen("repro", "--verify", "ffffffff", cwd=root)
    assert no_lock.returncode == 3 and "Traceback" not in no_lock.stderr


def test_gc_keeps_the_pipeline_outs(project: Project) -> None:
    from molen.data.gc import collect_garbage

    run(project)
    (project.root / "params.yaml").write_text("train:\n  lr: 0.25\n  max_depth: 4\n")
    run(project)  # the lr 0.5 outs are now only in the run cache
    (project.root / "runs.log").write_text("")
    result = collect_garbage(session())
    assert result.kept > 0
    from molen.data.manifest import Manifest

    cache = open_workspace().objects
    prepared = read_lock(project.root)["prepare"].outs["data/prepared"]
    files = Manifest.from_bytes(cache.get_bytes(prepared.hash)).entries
    assert all(cache.exists(entry.digest) for entry in files)  # a folder out keeps its files
    (project.root / "params.yaml").write_text("train:\n  lr: 0.5\n  max_depth: 4\n")
    assert actions(run(project))["train"] == "restored"  # its outs survived the gc
    assert (project.root / "runs.log").read_text() == ""


def test_a_repro_killed_mid_stage_is_completed_by_the_next(project: Project) -> None:
    import os
    import signal
    import time

    root = project.root
    (root / "train.py").write_text(
        "import pathlib, time\n"
        "pathlib.Path('model.json').write_text('{\"weight\": ')\n"  # half an out, then a long pause
        "pathlib.Path('started').write_text('')\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [*MOLEN, "repro"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not (root / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # molen and its stage, as a killed job goes
    process.wait()
    assert set(read_lock(root)) == {"prepare"}  # the interrupted stage recorded nothing
    from molen.hashing import hash_bytes

    assert not open_workspace().objects.exists(hash_bytes(b'{"weight": '))
    (root / "train.py").write_text(TRAIN)
    again = molen("repro", cwd=root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "up-to-date  prepare" in again.stdout and "ran  train" in again.stdout
    assert set(read_lock(root)) == {"prepare", "train", "evaluate"}
    import molen as api

    assert {r.status for r in api.search_runs()} == {"KILLED", "FINISHED"}  # the dead run is marked


def test_sigterm_during_a_stage_ends_the_repro_run_killed(project: Project) -> None:
    """The run starts in a stage's thread, where no signal handler can be set: repro sets it
    from the main thread first, so SIGTERM (a cancelled cluster task, `kill`) ends it KILLED."""
    import signal
    import time

    import molen as api

    root = project.root
    (root / "slow.py").write_text("import time\ntime.sleep(60)\n")
    with open(project.config_path, "a") as config:
        config.write("  slow:\n    cmd: python slow.py\n    deps: [slow.py]\n    outs: [never.txt]\n")
    process = subprocess.Popen([*MOLEN, "repro", "slow"], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not api.search_runs("status = 'RUNNING'"):
            assert time.monotonic() < deadline and process.poll() is None, "the repro's run did not start"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    (run,) = api.search_runs("name = 'repro'")
    assert run.status == "KILLED"

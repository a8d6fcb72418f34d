"""Experiment tracking through the public Python API, as a training script uses it."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import molen
from molen.errors import ConflictError, InvalidNameError, InvalidValueError, NotFoundError, UsageError
from molen.project import init_project
from molen.tracking import runs as runs_module
from molen.workspace import open_workspace


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh project that is a git repository with one commit; cwd is its root."""
    root = tmp_path / "proj"
    init_project(root, experiment="exp")
    (root / ".gitignore").write_text(".molen/\n")
    (root / "train.py").write_text("print('hi')\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "first")
    monkeypatch.chdir(root)
    yield root
    while (run := molen.active_run()) is not None:
        run.end()


def _run_script(root: Path, code: str, **kwargs: object) -> subprocess.Popen[str]:
    script = root / "script.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(script)], cwd=root, env=env, stdout=subprocess.PIPE, text=True, **kwargs
    )


def test_a_run_records_params_metrics_tags_and_finishes(project: Path) -> None:
    with molen.start_run(name="first", tags={"team": "risk"}) as run:
        run.log_params({"max_depth": 8, "lr": 0.1})
        molen.log_param("seed", 1)
        for step in range(5):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        molen.log_metrics({"auc": 0.91, "acc": 0.8})
        molen.set_tag("stage", "dev")
        assert molen.active_run() is run
    assert molen.active_run() is None
    record = molen.get_run(run.id)
    assert record.status == "FINISHED"
    assert record.name == "first"
    assert record.experiment == "exp"
    assert record.params == {"max_depth": "8", "lr": "0.1", "seed": "1"}
    assert record.metrics["loss"] == pytest.approx(0.2)
    assert record.metrics["auc"] == pytest.approx(0.91)
    assert record.tags["team"] == "risk" and record.tags["stage"] == "dev"
    assert record.end_time is not None and record.end_time >= record.start_time
    history = molen.get_metric_history(run.id[:6], "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert history[-1].value == pytest.approx(0.2)


def test_system_context_is_captured(project: Path) -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout
    with molen.start_run() as run:
        pass
    record = molen.get_run(run.id)
    assert record.tags["molen.git.commit"] == head.strip()
    assert record.tags["molen.git.dirty"] == "false"
    assert record.tags["molen.python"].startswith(("CPython", "PyPy"))
    assert record.tags["molen.host"] and record.tags["molen.user"]
    assert "molen.command" in record.tags
    packages = {a.path: a for a in record.artifacts}["molen/packages.txt"]
    text = open_workspace().objects.get_bytes(packages.digest).decode()
    assert "molen==" in text.lower() or "molen ==" in text.lower()


def test_the_package_snapshot_is_stored_once(project: Path) -> None:
    with molen.start_run() as first:
        pass
    with molen.start_run() as second:
        pass
    digests = {
        a.digest
        for r in (first, second)
        for a in molen.get_run(r.id).artifacts
        if a.path == "molen/packages.txt"
    }
    assert len(digests) == 1
    assert list(open_workspace().objects.digests()).count(digests.pop()) == 1


def test_uncommitted_changes_are_hashed(project: Path) -> None:
    code = """
        import molen
        with molen.start_run() as run:
            pass
        r = molen.get_run(run.id)
        print(r.tags["molen.git.dirty"], r.tags.get("molen.git.diff_hash", "-"))
    """
    clean = _run_script(project, code).communicate()[0].split()
    (project / "train.py").write_text("print('changed')\n")
    dirty_a = _run_script(project, code).communicate()[0].split()
    (project / "train.py").write_text("print('changed again')\n")
    dirty_b = _run_script(project, code).communicate()[0].split()
    # the script itself is untracked, so even the "clean" tree is dirty; the hashes tell apart
    assert dirty_a[0] == "true" and dirty_b[0] == "true"
    assert len({clean[1], dirty_a[1], dirty_b[1]}) == 3


def test_an_end_that_cannot_be_written_loses_nothing_and_can_be_retried(project: Path) -> None:
    from molen.errors import StoreUnavailableError

    run = molen.start_run(name="unlucky")
    for step in range(100):
        run.log_metric("loss", 1.0 / (step + 1), step=step)
    store = run._recorder.store
    real = store.log_batch
    failures = iter([StoreUnavailableError("the metadata store is down")])

    def down_once(*args: object, **kwargs: object) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real(*args, **kwargs)  # type: ignore[arg-type]

    store.log_batch = down_once  # type: ignore[method-assign]
    try:
        with pytest.raises(StoreUnavailableError):
            run.end()
        assert run.status == "RUNNING" and molen.active_run() is None  # not ended, not active
        assert runs_module._unended == [run]  # ended at exit if not before
        run.end()
    finally:
        del store.log_batch
    record = open_workspace().metadata.get_run(run.id)
    assert record.status == "FINISHED" and runs_module._unended == []
    history = open_workspace().metadata.metric_history(run.id, "loss")
    assert [m.step for m in history] == list(range(100))


def test_exception_marks_the_run_failed_and_propagates(project: Path) -> None:
    with pytest.raises(ZeroDivisionError), molen.start_run() as run:
        run.log_metric("x", 1.0)
        _ = 1 / 0
    record = molen.get_run(run.id)
    assert record.status == "FAILED"
    assert record.metrics == {"x": 1.0}


def test_keyboard_interrupt_marks_the_run_killed(project: Path) -> None:
    with pytest.raises(KeyboardInterrupt), molen.start_run() as run:
        raise KeyboardInterrupt
    assert molen.get_run(run.id).status == "KILLED"


def test_nested_runs_know_their_parent(project: Path) -> None:
    with molen.start_run(name="sweep") as parent:
        with molen.start_run(name="trial") as child:
            assert molen.active_run() is child
        assert molen.active_run() is parent
    assert molen.get_run(child.id).parent_id == parent.id
    children = molen.search_runs(f"parent_id = '{parent.id}'")
    assert [r.id for r in children] == [child.id]


def test_a_param_cannot_change(project: Path) -> None:
    with molen.start_run() as run:
        run.log_param("depth", 8)
        run.log_param("depth", "8")  # the same value again is fine
        with pytest.raises(ConflictError, match="immutable"):
            run.log_param("depth", 9)
    assert molen.get_run(run.id).params == {"depth": "8"}


def test_nan_and_infinity_are_stored_faithfully(project: Path) -> None:
    with molen.start_run() as run:
        run.log_metric("nan", float("nan"))
        run.log_metric("inf", float("inf"))
        run.log_metric("ninf", float("-inf"))
    metrics = molen.get_run(run.id).metrics
    assert math.isnan(metrics["nan"])
    assert metrics["inf"] == math.inf and metrics["ninf"] == -math.inf
    assert math.isnan(molen.get_metric_history(run.id, "nan")[0].value)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda r: r.log_metric("auc", "high"), InvalidValueError),
        (lambda r: r.log_metric("auc", None), InvalidValueError),
        (lambda r: r.log_metric("auc", 1.0, step=1.5), InvalidValueError),
        (lambda r: r.log_metric("bad\nname", 1.0), InvalidNameError),
        (lambda r: r.log_metric("../escape", 1.0), InvalidNameError),
        (lambda r: r.log_metric("x" * 251, 1.0), InvalidNameError),
        (lambda r: r.log_param("", 1), InvalidNameError),
        (lambda r: r.log_param("long", "v" * 8001), InvalidValueError),
        (lambda r: r.set_tag("t", "v" * 8001), InvalidValueError),
        (lambda r: r.log_text("x", "../outside.txt"), InvalidNameError),
        (lambda r: r.log_text("x", "/etc/passwd"), InvalidNameError),
        (lambda r: r.log_artifact("does/not/exist.txt"), NotFoundError),
        (lambda r: r.log_input(12345), InvalidValueError),
        (lambda r: r.log_figure("not a figure", "f.png"), InvalidValueError),
    ],
)
def test_bad_input_is_refused_clearly_and_the_run_survives(project: Path, call: object, error: type) -> None:
    with molen.start_run() as run:
        run.log_metric("kept", 1.0)
        with pytest.raises(error) as caught:
            call(run)  # type: ignore[operator]
        assert "\n" not in str(caught.value)
    record = molen.get_run(run.id)
    assert record.status == "FINISHED" and record.metrics == {"kept": 1.0}


def test_invalid_experiment_and_run_names(project: Path) -> None:
    with pytest.raises(InvalidNameError):
        molen.start_run(experiment="")
    with pytest.raises(InvalidNameError):
        molen.start_run(name="x" * 300)
    assert molen.active_run() is None


def test_logging_without_a_run_or_after_the_end(project: Path) -> None:
    with pytest.raises(UsageError, match="no active run"):
        molen.log_metric("x", 1.0)
    with molen.start_run() as run:
        pass
    with pytest.raises(UsageError, match="has ended"):
        run.log_metric("x", 1.0)


def test_numpy_scalars_are_numbers(project: Path) -> None:
    np = pytest.importorskip("numpy")
    with molen.start_run() as run:
        run.log_metric("f32", np.float32(0.5), step=np.int64(3))
    assert molen.get_metric_history(run.id, "f32")[0].step == 3


def test_artifacts_dicts_and_figures(project: Path, tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = tmp_path / "report.txt"
    report.write_text("all good\n")
    folder = tmp_path / "plots"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    figure, axes = plt.subplots()
    axes.plot([1, 2, 3])
    with molen.start_run() as run:
        run.log_artifact(report)
        run.log_artifact(folder)
        molen.log_dict({"a": 1}, "config.json")
        molen.log_dict({"b": [1, 2]}, "config.yaml")
        run.log_figure(figure, "curve.png")
    plt.close(figure)
    artifacts = {a.path: a for a in molen.get_run(run.id).artifacts}
    objects = open_workspace().objects
    assert objects.get_bytes(artifacts["report.txt"].digest) == b"all good\n"
    assert objects.get_bytes(artifacts["plots/sub/b.txt"].digest) == b"b"
    assert json.loads(objects.get_bytes(artifacts["config.json"].digest)) == {"a": 1}
    assert b"b:" in objects.get_bytes(artifacts["config.yaml"].digest)
    assert objects.get_bytes(artifacts["curve.png"].digest).startswith(b"\x89PNG")


def test_log_input_records_data_versions(project: Path) -> None:
    pd = pytest.importorskip("pandas")
    (project / "data").mkdir()
    (project / "data" / "train.csv").write_text("a,b\n1,2\n")
    (project / "data" / "more").mkdir()
    (project / "data" / "more" / "x.csv").write_text("a\n3\n")
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    with molen.start_run() as first:
        file_version = first.log_input("data/train.csv")
        folder_version = first.log_input("data", name="all-data")
        frame_version = first.log_input(frame, name="features")
    with molen.start_run() as second:
        again = second.log_input(project / "data" / "train.csv")
        frame_again = second.log_input(frame.copy(), name="features")
    assert file_version.digest == again.digest and file_version.path == "data/train.csv"
    assert folder_version.kind == "directory" and folder_version.file_count == 2
    assert frame_version.kind == "frame" and frame_version.digest == frame_again.digest
    inputs = {i.path: i for i in molen.get_run(first.id).inputs}
    assert set(inputs) == {"data/train.csv", "all-data", "features"}
    assert inputs["data/train.csv"].size == len("a,b\n1,2\n")
    store = open_workspace().metadata
    assert set(store.runs_using(file_version.digest)) == {first.id, second.id}


def test_search_runs_filters_sorts_and_frames(project: Path) -> None:
    ids = {}
    for depth, auc in ((4, 0.8), (8, 0.95), (16, 0.9)):
        with molen.start_run(name=f"d{depth}") as run:
            run.log_params({"max_depth": depth})
            run.log_metric("auc", auc)
        ids[depth] = run.id
    found = molen.search_runs("metrics.auc > 0.85", order_by="-metrics.auc")
    assert [r.id for r in found] == [ids[8], ids[16]]
    exact = molen.search_runs("metrics.auc > 0.9 and params.max_depth = '8'", experiment="exp")
    assert [r.id for r in exact] == [ids[8]]
    frame = molen.search_runs(order_by="params.max_depth", as_frame=True)
    assert list(frame["params.max_depth"]) == ["16", "4", "8"]  # params are text
    assert frame.loc[frame["run_id"] == ids[4], "metrics.auc"].item() == pytest.approx(0.8)
    with pytest.raises(NotFoundError):
        molen.search_runs(experiment="nope")


def test_buffered_metrics_survive_a_normal_exit_without_ending(project: Path) -> None:
    process = _run_script(
        project,
        """
        import molen
        run = molen.start_run()
        for i in range(5000):
            run.log_metric("loss", i, step=i)
        print(run.id)
        """,
    )
    run_id = process.communicate(timeout=60)[0].strip()
    assert process.returncode == 0
    record = molen.get_run(run_id)
    assert record.status == "FINISHED"
    assert len(molen.get_metric_history(run_id, "loss")) == 5000


def test_uncaught_exception_without_context_manager_fails_the_run(project: Path) -> None:
    process = _run_script(
        project,
        """
        import molen
        run = molen.start_run()
        run.log_metric("x", 1.0)
        print(run.id, flush=True)
        raise RuntimeError("boom")
        """,
        stderr=subprocess.DEVNULL,
    )
    run_id = process.communicate(timeout=60)[0].strip()
    assert process.returncode == 1
    assert molen.get_run(run_id).status == "FAILED"
    assert molen.get_run(run_id).metrics == {"x": 1.0}


def test_sigterm_kills_the_run_and_keeps_every_metric(project: Path) -> None:
    process = _run_script(
        project,
        """
        import time, molen
        with molen.start_run() as run:
            for i in range(20000):
                run.log_metric("loss", i, step=i)
            print(run.id, flush=True)
            time.sleep(60)
        """,
    )
    assert process.stdout is not None
    run_id = process.stdout.readline().strip()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGTERM
    assert molen.get_run(run_id).status == "KILLED"
    assert len(molen.get_metric_history(run_id, "loss")) == 20000


def test_sigterm_while_a_transaction_holds_the_runs_row_does_not_hang(
    tmp_path: Path, postgres_url: str
) -> None:
    """SIGTERM interrupting a write that locked the run's row (a trial killed while it ends
    its run): ending the run from the handler waits on that lock, which the interrupted code
    never releases. The process must still die, within SIGTERM_WAIT, and the lock with it."""
    from molen.stores.metadata.sql import SqlMetadataStore

    init_project(tmp_path)
    script = tmp_path / "held.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, molen
            from sqlalchemy import text
            from molen.workspace import open_workspace
            run = molen.start_run()
            store = open_workspace().metadata
            with store.engine.begin() as connection:  # as a write the signal interrupts
                connection.execute(text("UPDATE runs SET name = 'held' WHERE id = :id"), {"id": run.id})
                print(run.id, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                signal.pause()
            """
        )
    )
    env = {**os.environ, "MOLEN_TRACKING_URI": postgres_url, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert time.monotonic() - started < 30
    assert "could not be ended within" in done.stderr
    store = SqlMetadataStore(postgres_url)
    try:
        record = store.get_run(done.stdout.strip())
        assert record.name != "held"  # the interrupted transaction was rolled back, not kept
        assert store.end_run(record.id, "KILLED", int(time.time() * 1000), only_if_running=True)
        assert store.get_run(record.id).status == "KILLED"  # nothing holds its row any more
    finally:
        store.close()


def test_a_run_killed_with_sigkill_is_shown_killed(project: Path) -> None:
    process = _run_script(
        project,
        """
        import time, molen
        run = molen.start_run()
        run.log_metric("x", 1.0)
        run.flush()
        print(run.id, flush=True)
        time.sleep(60)
        """,
    )
    assert process.stdout is not None
    run_id = process.stdout.readline().strip()
    assert molen.get_run(run_id).status == "RUNNING"  # alive: its process still runs
    process.kill()
    process.wait(timeout=30)
    record = molen.get_run(run_id)
    assert record.status == "KILLED"
    assert record.metrics == {"x": 1.0}
    assert record.end_time is not None


def test_a_silent_run_on_another_host_is_killed_by_heartbeat(project: Path) -> None:
    store = open_workspace().metadata
    experiment = store.get_or_create_experiment("exp")
    now = int(time.time() * 1000)
    store.create_run(
        run_id="ab" * 16,
        experiment_id=experiment.id,
        name="remote",
        start_time=now - 10_000_000,
        host="some-other-machine",
        pid=1,
    )
    store.create_run(
        run_id="cd" * 16,
        experiment_id=experiment.id,
        name="alive",
        start_time=now,
        host="some-other-machine",
        pid=1,
    )
    assert molen.get_run("abab").status == "KILLED"
    assert molen.get_run("cdcd").status == "RUNNING"


def test_missing_project_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(molen.MolenError, match="molen init"):
        molen.start_run()


def test_team_setup_postgres_and_s3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str, s3_bucket: str, s3_endpoint: str
) -> None:
    """The same API against PostgreSQL and S3-compatible storage, configured by environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOLEN_TRACKING_URI", postgres_url)
    monkeypatch.setenv("MOLEN_OBJECTS_URL", f"s3://{s3_bucket}/molen")
    monkeypatch.setenv("MOLEN_OBJECTS_S3_ENDPOINT_URL", s3_endpoint)
    (tmp_path / "data.csv").write_text("a\n1\n")
    with molen.start_run(experiment="team") as run:
        run.log_params({"k": "v"})
        for i in range(100):
            run.log_metric("m", i * 0.5, step=i)
        run.log_text("hello", "notes/hello.txt")
        data = run.log_input(tmp_path / "data.csv")
    record = molen.get_run(run.id)
    assert record.status == "FINISHED" and record.params == {"k": "v"} and record.metrics["m"] == 49.5
    objects = open_workspace().objects
    assert objects.url.startswith("s3://")
    artifact = {a.path: a for a in record.artifacts}["notes/hello.txt"]
    assert objects.get_bytes(artifact.digest) == b"hello"
    assert objects.get_bytes(data.digest) == b"a\n1\n"
    assert [r.id for r in molen.search_runs("params.k = 'v'", experiment="team")] == [run.id]


def test_active_run_stack_is_empty_between_tests() -> None:
    assert runs_module.active_run() is None

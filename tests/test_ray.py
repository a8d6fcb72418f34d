"""Sweeps on a real Ray cluster: a head and a second worker node started with `ray start` on
loopback, the runs in PostgreSQL and the objects in the S3-compatible server, as a team runs it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_pipeline import EVALUATE, PIPELINE, PREPARE, _commit

ray = pytest.importorskip("ray")
# one worker runs them all, so one Ray cluster is started (with pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("ray")

MOLEN = [sys.executable, "-m", "molen"]
#: train.py of test_pipeline, but a max_depth of 0 fails (a trial that fails on the cluster)
TRAIN = """
import json, pathlib, sys, yaml
params = yaml.safe_load(open("params.yaml"))["train"]
if params["max_depth"] == 0:
    sys.exit("max_depth 0 is not a tree")
rows = [float(x.split(",")[1]) for x in pathlib.Path("data/prepared/rows.txt").read_text().split()]
model = {"weight": sum(rows) * params["lr"], "depth": params["max_depth"]}
pathlib.Path("model.json").write_text(json.dumps(model))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ray_cluster(s3_endpoint: str) -> Iterator[str]:
    """A head node and one more worker node, one CPU each, on loopback; yields the address.
    Started after the S3 server, so the workers have its credentials in their environment."""
    port = _free_port()
    temp = Path(f"/tmp/molen-ray-{uuid.uuid4().hex[:8]}")  # short: Ray's socket paths are limited
    # a loopback test cluster: no token authentication (Ray turns it on once ~/.ray/auth_token exists)
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    common = ["--num-cpus", "1", "--object-store-memory", str(200 * 1024**2), "--block"]
    ray_bin = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
         "--include-dashboard", "false", "--temp-dir", str(temp), *common],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    worker = None
    try:
        deadline = time.monotonic() + 90
        probe = (
            f"import ray; ray.init(address='{address}', logging_level='ERROR'); "
            "print(ray.cluster_resources().get('CPU', 0))"
        )
        while True:
            done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
            if done.returncode == 0:
                break
            assert time.monotonic() < deadline and head.poll() is None, (
                f"the Ray head did not start: {done.stderr[-800:]}"
            )
            time.sleep(1)
        worker = subprocess.Popen(
            [ray_bin, "start", "--address", address, "--node-ip-address", "127.0.0.1", *common],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        while True:
            done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
            if done.returncode == 0 and float(done.stdout.split()[-1]) >= 2:
                break
            assert time.monotonic() < deadline, "the second Ray node did not join"
            time.sleep(1)
        yield address
    finally:
        for process in (worker, head):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, 15)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
        shutil.rmtree(temp, ignore_errors=True)


def team_env(postgres_url: str, s3_bucket: str, s3_endpoint: str, ray_cluster: str) -> dict[str, str]:
    """The environment of a team member: the shared database and bucket, the cluster."""
    return {
        **os.environ,
        "MOLEN_TRACKING_URI": postgres_url,
        "MOLEN_OBJECTS_URL": f"s3://{s3_bucket}/molen",
        "MOLEN_OBJECTS_S3_ENDPOINT_URL": s3_endpoint,
        "RAY_ADDRESS": ray_cluster,
    }


def molen(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MOLEN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _project(root: Path) -> None:
    from molen.project import init_project

    project = init_project(root)
    (root / "data").mkdir()
    (root / "data" / "raw.csv").write_text("id,x\n1,2\n2,3\n")
    (root / "prepare.py").write_text(PREPARE)
    (root / "train.py").write_text(TRAIN)
    (root / "evaluate.py").write_text(EVALUATE)
    (root / "params.yaml").write_text("train:\n  lr: 0.5\n  max_depth: 4\n")
    with open(project.config_path, "a") as config:
        config.write(PIPELINE + "ray:\n  trial:\n    cpus: 1\n    memory: 100MB\n")


def test_a_sweep_runs_on_the_cluster_into_the_shared_stores(
    tmp_path: Path, ray_cluster: str, postgres_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    root = tmp_path / "team"
    _project(root)
    env = team_env(postgres_url, s3_bucket, s3_endpoint, ray_cluster)
    added = molen("data", "add", "data/raw.csv", cwd=root, env=env)  # the data is in the bucket now
    assert added.returncode == 0, added.stderr
    _commit(root, "the pipeline")
    with open(root / "prepare.py", "a") as script:
        script.write("# not committed\n")  # the sweep runs code with uncommitted changes
    done = molen(
        "exp", "run", "--grid", "train.lr=0.1,0.2,0.3", "--grid", "train.max_depth=2,0",
        "--name", "cluster", "--executor", "ray", cwd=root, env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # three trials fail, the sweep goes on
    assert done.stdout.count("done on the cluster") == 6
    assert "max_depth 0 is not a tree" in done.stdout

    from molen.query import parse_filter
    from molen.stores.metadata.sql import SqlMetadataStore

    store = SqlMetadataStore(postgres_url)
    try:
        (sweep,) = store.search_runs(where=parse_filter("name = 'cluster'"))
        assert sweep.status == "FAILED" and sweep.tags["molen.exp.executor"] == "ray"
        children = store.search_runs(where=parse_filter(f"parent_id = '{sweep.id}'"))
        assert len(children) == 6
        finished = [c for c in children if c.status == "FINISHED"]
        failed = [c for c in children if c.status == "FAILED"]
        assert len(finished) == 3 and len(failed) == 3
        # each result is the local result: score = (2 + 3) * lr / 10
        assert sorted(round(c.metrics["score"], 6) for c in finished) == [0.05, 0.1, 0.15]
        assert all(c.params["train.max_depth"] == "2" for c in finished)
        # the data the workers used is the tracked version, read from the bucket
        record = store.get_run(finished[0].id)
        assert any(i.path == "data/raw.csv" for i in record.inputs)
        # each trial records the code it ran as a local trial does: the sweep's commit and diff
        # (its copy on the worker has no .git), and `molen repro` as its command
        commit = sweep.tags["molen.git.commit"]
        assert len(commit) == 40 and sweep.tags["molen.git.dirty"] == "true"
        diff = {a.path: a for a in store.get_run(sweep.id).artifacts}["molen/git.diff"]
        for child in children:
            assert child.tags["molen.git.commit"] == commit and child.tags["molen.git.dirty"] == "true"
            assert child.tags["molen.git.diff_hash"] == sweep.tags["molen.git.diff_hash"]
            assert {a.path: a for a in store.get_run(child.id).artifacts}["molen/git.diff"] == diff
            assert child.tags["molen.command"] == "molen repro"
    finally:
        store.close()


def test_ray_needs_stores_every_worker_sees(tmp_path: Path) -> None:
    root = tmp_path / "alone"
    _project(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLEN_")}
    done = molen("exp", "run", "--grid", "train.lr=0.1,0.2", "--executor", "ray", cwd=root, env=env)
    assert done.returncode == 2
    assert "--executor ray" in done.stderr and "MOLEN_TRACKING_URI=postgresql" in done.stderr
    env["MOLEN_TRACKING_URI"] = "postgresql+psycopg://nobody@127.0.0.1:9/none"
    done = molen("exp", "run", "--grid", "train.lr=0.1,0.2", "--executor", "ray", cwd=root, env=env)
    assert done.returncode == 2 and "MOLEN_OBJECTS_URL=s3://" in done.stderr


TRAIN_MODEL = """
import molen, numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(500, 3)), columns=["a", "b", "c"])
y = (X["a"] + X["b"] > 0).astype(int)
with molen.start_run() as run:
    run.log_model(LogisticRegression().fit(X, y), "scorer", reference=X, y_reference=y)
"""


def test_batch_scoring_on_the_cluster_matches_local_scoring(
    tmp_path: Path, ray_cluster: str, postgres_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    import boto3
    import numpy as np
    import pandas as pd

    root = tmp_path / "scoring"
    from molen.project import init_project

    init_project(root)
    env = {**team_env(postgres_url, s3_bucket, s3_endpoint, ray_cluster), "MOLEN_MODELS_IMPORTANCE": "false"}
    trained = subprocess.run(
        [sys.executable, "-c", TRAIN_MODEL], cwd=root, env=env, capture_output=True, text=True
    )
    assert trained.returncode == 0, trained.stderr
    assert molen("models", "alias", "scorer", "1", "production", cwd=root, env=env).returncode == 0

    rng = np.random.default_rng(1)
    parts = [pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"]) for n in (700, 1, 1300)]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    for index, part in enumerate(parts):
        local = tmp_path / f"part-{index}.parquet"
        part.to_parquet(local)
        s3.upload_file(str(local), s3_bucket, f"in/part-{index}.parquet")
    pd.concat(parts).to_parquet(tmp_path / "all.parquet")

    here = molen(
        "predict", "scorer@production", "-i", str(tmp_path / "all.parquet"),
        "-o", str(tmp_path / "local.parquet"), cwd=root, env=env,
    )  # fmt: skip
    assert here.returncode == 0, here.stderr
    done = molen(
        "predict", "scorer@production", "-i", f"s3://{s3_bucket}/in/*.parquet", "-o", f"s3://{s3_bucket}/out/",
        "--executor", "ray", "--chunk-size", "500", cwd=root, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Scored 2,001 rows in 3 files" in done.stdout

    scored = []
    for index in range(3):
        target = tmp_path / f"out-{index}.parquet"
        s3.download_file(s3_bucket, f"out/part-{index}.parquet", str(target))
        scored.append(pd.read_parquet(target))
    cluster = pd.concat(scored, ignore_index=True)
    local = pd.read_parquet(tmp_path / "local.parquet")
    assert list(cluster.columns) == list(local.columns)
    pd.testing.assert_frame_equal(cluster, local)  # row for row, probabilities included

    missing = molen(
        "predict", "scorer@production", "-i", f"s3://{s3_bucket}/nothing/*.parquet",
        "-o", f"s3://{s3_bucket}/x/", "--executor", "ray", cwd=root, env=env,
    )  # fmt: skip
    assert missing.returncode == 3 and "no .parquet files there" in missing.stderr


def test_repro_runs_its_stages_on_the_cluster_and_never_sends_cached_ones(
    tmp_path: Path, ray_cluster: str, postgres_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    root = tmp_path / "pipeline"
    _project(root)
    with open(root / "molen.yaml", "a") as config:
        config.write("  stages:\n    train:\n      cpus: 1\n      memory: 200MB\n")
    env = team_env(postgres_url, s3_bucket, s3_endpoint, ray_cluster)
    assert molen("data", "add", "data/raw.csv", cwd=root, env=env).returncode == 0
    done = molen("repro", "--executor", "ray", "-j", "2", cwd=root, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(
        f"ran  {stage}" in " ".join(done.stdout.split()) or stage in done.stdout
        for stage in ("prepare", "train")
    )
    # the outs came back into the workspace and molen.lock, as after a local run
    assert json.loads((root / "model.json").read_text())["weight"] == 2.5
    assert json.loads((root / "metrics.json").read_text())["score"] == 0.25
    assert "model.json" in (root / "molen.lock").read_text()
    again = molen("repro", "--executor", "ray", cwd=root, env=env)
    assert again.returncode == 0 and "up-to-date" in again.stdout

    (root / "params.yaml").write_text("train:\n  lr: 0.1\n  max_depth: 4\n")
    changed = molen("repro", "--executor", "ray", cwd=root, env=env)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert json.loads((root / "metrics.json").read_text())["score"] == pytest.approx(0.05)
    (root / "params.yaml").write_text("train:\n  lr: 0.5\n  max_depth: 4\n")
    back = molen("repro", "--executor", "ray", cwd=root, env=env)  # the run cache has these
    assert back.returncode == 0, back.stdout + back.stderr
    assert "restored" in back.stdout and " ran " not in f" {' '.join(back.stdout.split())} "
    assert json.loads((root / "model.json").read_text())["weight"] == 2.5

    from molen.query import parse_filter
    from molen.stores.metadata.sql import SqlMetadataStore

    store = SqlMetadataStore(postgres_url)
    try:
        runs = store.search_runs(where=parse_filter("name = 'repro'"), sort=[])
        assert len(runs) == 3 and all(r.status == "FINISHED" for r in runs)
        assert sorted(round(r.metrics["score"], 6) for r in runs) == [0.05, 0.25, 0.25]
    finally:
        store.close()


KILLER = """
import os, pathlib, sys, time
import psutil
marker = pathlib.Path(os.environ["KILL_MARKER"])
if not marker.exists():  # the first attempt: kill the Ray worker running this stage
    marker.write_text("killed once")
    for parent in psutil.Process().parents():
        if parent.name().startswith("ray::") or "ray::" in " ".join(parent.cmdline()):
            parent.kill()
            break
    time.sleep(120)  # still running, as a stage is when its worker is lost: it dies with it
    sys.exit(9)
pathlib.Path("survived.txt").write_text("second attempt\\n")
"""


def _fragile(root: Path, *, params: bool = False) -> Path:
    """A project whose one stage kills the Ray worker running it, the first time (KILLER); the
    marker file that records that first time."""
    from molen.project import init_project

    project = init_project(root)
    (root / "killer.py").write_text(KILLER)
    marker = Path(f"/tmp/molen-kill-{uuid.uuid4().hex[:8]}")
    if params:
        (root / "params.yaml").write_text("train:\n  lr: 0.5\n")
    with open(project.config_path, "a") as config:
        config.write(
            "stages:\n  fragile:\n    cmd: python killer.py\n    deps: [killer.py]\n"
            + ("    params: [train.lr]\n" if params else "")
            + f"    outs: [survived.txt]\n    env: {{KILL_MARKER: {marker}}}\n"
        )
    return marker


def test_a_stage_whose_worker_dies_is_retried(
    tmp_path: Path, ray_cluster: str, postgres_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    root = tmp_path / "fragile"
    marker = _fragile(root)
    env = team_env(postgres_url, s3_bucket, s3_endpoint, ray_cluster)
    try:
        done = molen("repro", "--executor", "ray", cwd=root, env=env)
        assert marker.read_text() == "killed once"  # the first attempt's worker died
        assert done.returncode == 0, done.stdout + done.stderr
        assert (root / "survived.txt").read_text() == "second attempt\n"
    finally:
        marker.unlink(missing_ok=True)


def test_a_trial_whose_worker_dies_is_retried_and_its_first_run_ends_killed(
    tmp_path: Path, ray_cluster: str, postgres_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    from molen.query import parse_filter
    from molen.stores.metadata.sql import SqlMetadataStore

    root = tmp_path / "fragile-sweep"
    marker = _fragile(root, params=True)
    env = team_env(postgres_url, s3_bucket, s3_endpoint, ray_cluster)
    store = SqlMetadataStore(postgres_url)
    try:
        sweep_args = ["exp", "run", "--grid", "train.lr=0.1,0.2", "--name", "fragile", "--executor", "ray"]
        done = molen(*sweep_args, cwd=root, env=env)
        assert marker.read_text() == "killed once"  # one trial's first worker died under it
        assert done.returncode == 0, done.stdout + done.stderr
        (sweep,) = store.search_runs(where=parse_filter("name = 'fragile'"))
        children = store.search_runs(where=parse_filter(f"parent_id = '{sweep.id}'"))
        statuses = sorted(child.status for child in children)
        # the retried trial recorded a second run; the lost attempt's run ends KILLED (Ray kills
        # a dead worker's processes outright, so the driver ends it), never left RUNNING
        assert statuses == ["FINISHED", "FINISHED", "KILLED"], statuses
    finally:
        marker.unlink(missing_ok=True)
        store.close()


def test_ctrl_c_cancels_the_sweep_and_its_runs_end_killed(
    tmp_path: Path, ray_cluster: str, postgres_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    import signal

    from molen.project import init_project
    from molen.query import parse_filter
    from molen.stores.metadata.sql import SqlMetadataStore

    root = tmp_path / "slow"
    project = init_project(root)
    (root / "slow.py").write_text(
        "import time, pathlib\ntime.sleep(120)\npathlib.Path('out.txt').write_text('x')\n"
    )
    (root / "params.yaml").write_text("train:\n  lr: 0.5\n")
    with open(project.config_path, "a") as config:
        config.write("stages:\n  slow:\n    cmd: python slow.py\n    deps: [slow.py]\n")
        config.write("    params: [train.lr]\n    outs: [out.txt]\n")
    env = team_env(postgres_url, s3_bucket, s3_endpoint, ray_cluster)
    driver = subprocess.Popen(
        [*MOLEN, "exp", "run", "--grid", "train.lr=0.1,0.2,0.3", "--name", "doomed", "--executor", "ray"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    store = SqlMetadataStore(postgres_url)
    try:
        deadline = time.monotonic() + 120
        while store.count_runs(where=parse_filter("status = 'RUNNING' and name != 'doomed'")) < 2:
            assert time.monotonic() < deadline and driver.poll() is None, driver.communicate()[0]
            time.sleep(0.5)
        driver.send_signal(signal.SIGINT)
        output = driver.communicate(timeout=120)[0]
        assert driver.returncode != 0, output
        (sweep,) = store.search_runs(where=parse_filter("name = 'doomed'"))
        assert sweep.status == "KILLED"
        deadline = time.monotonic() + 60  # the cancelled trials' molen repro end their runs
        while store.count_runs(where=parse_filter("status = 'RUNNING'")) > 0:
            left = [(r.name, r.status) for r in store.search_runs()]
            assert time.monotonic() < deadline, (
                f"a trial's run is still RUNNING after Ctrl-C: {left}\n{output}"
            )
            time.sleep(0.5)
        children = store.search_runs(where=parse_filter(f"parent_id = '{sweep.id}'"))
        assert children and all(child.status == "KILLED" for child in children)
    finally:
        if driver.poll() is None:
            driver.kill()
        store.close()


def test_the_zygote_opens_the_stores_once_and_leaves_no_connection_to_its_children(
    tmp_path: Path, postgres_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    """What a zygote opens before forking (S3 client, metadata store, the stored package list)
    is inherited by every trial, so no connection may stay open in it: children would share
    one socket. Checked for the team setup and for a molen server."""
    from conftest import molen_server
    from molen import workspace
    from molen.compute import zygote
    from molen.hashing import hash_bytes
    from molen.project import init_project
    from molen.stores.metadata import close_metadata_stores, open_metadata_store
    from molen.tracking import capture, runs

    init_project(tmp_path / "p")
    digest = hash_bytes(capture.package_snapshot())
    team = {
        **os.environ,
        "MOLEN_TRACKING_URI": postgres_url,
        "MOLEN_OBJECTS_URL": f"s3://{s3_bucket}/zygote",
        "MOLEN_OBJECTS_S3_ENDPOINT_URL": s3_endpoint,
    }
    opened: dict[str, str] = {}
    try:
        zygote._open_stores({"env": {**team, "MOLEN_EXP_NAME": "a"}, "folder": str(tmp_path / "p")}, opened)
        (store,) = workspace._object_stores.values()
        assert not store.client._endpoint.http_session._manager.pools  # no S3 connection kept
        assert open_metadata_store(postgres_url).engine.pool.checkedin() == 0  # nor a database one
        assert (store.url, digest) in runs._stored_objects  # a child will not store it again
        assert store.exists(digest)  # stored once, for every trial
        zygote._open_stores({"env": {**team, "MOLEN_EXP_NAME": "b"}, "folder": str(tmp_path / "p")}, opened)
        assert list(workspace._object_stores.values()) == [store]  # a trial's own variables: reused

        with molen_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "objects") as url:
            served = {**os.environ, "MOLEN_TRACKING_URI": url}
            zygote._open_stores({"env": served, "folder": str(tmp_path / "p")}, opened)
            (through_server,) = workspace._object_stores.values()
            assert getattr(through_server.session._local, "connection", None) is None  # none kept
            assert through_server.exists(digest)  # the package list went to the server
    finally:
        workspace._object_stores.clear()
        close_metadata_stores()

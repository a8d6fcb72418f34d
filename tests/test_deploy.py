"""molen predict (batch scoring) and molen build (Docker context, Kubernetes manifests),
checked structurally: there is no Docker engine or cluster here."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

import molen
from churn import churn_data, churn_pipeline
from molen.errors import ConflictError, InputSchemaError
from molen.project import init_project
from molen.registry.service import set_alias
from molen.serving.batch import predict_file
from molen.serving.build import build_docker, build_kubernetes
from molen.serving.predlog import read_log
from molen.serving.run import ServeOptions, build_app
from molen.workspace import open_workspace

pytestmark = pytest.mark.usefixtures("no_importance")

ROW = {"tenure": 3, "charges": 80.5, "plan": "basic"}


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    return churn_data(rows, seed)[0]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from sklearn.linear_model import LogisticRegression

    root = tmp_path / "proj"
    init_project(root, experiment="deploy")
    monkeypatch.chdir(root)
    train = frame(400)
    target = ((train["tenure"] < 20) & (train["plan"] == "basic")).astype(int)
    pipeline = churn_pipeline(LogisticRegression()).fit(train, target)
    for _ in range(2):
        with molen.start_run() as run:
            run.log_model(pipeline, "churn", reference=train)
    set_alias("churn", 2, "production")
    yield root


# -- batch scoring --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_batch_scoring_in_chunks_matches_the_model(project: Path, suffix: str) -> None:
    rows = frame(2_500, seed=1)
    source = project / f"rows{suffix}"
    rows.to_parquet(source) if suffix == ".parquet" else rows.to_csv(source, index=False)
    seen: list[tuple[int, int | None]] = []
    result = predict_file(
        "churn@production",
        source,
        project / "out" / "scored.parquet",
        chunk_size=1_000,
        log_root=str(project / "log"),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert (result.rows, result.chunks, result.version) == (2_500, 3, 2)
    total = 2_500 if suffix == ".parquet" else None
    assert seen == [(1_000, total), (2_000, total), (2_500, total)]
    scored = pd.read_parquet(project / "out" / "scored.parquet")
    model = molen.load_model("churn/2")
    assert scored["prediction"].tolist() == model.predict(rows).tolist()
    np.testing.assert_allclose(
        scored[["probability_0", "probability_1"]].to_numpy(), model.predict_proba(rows)
    )
    assert list(scored.columns[:3]) == ["tenure", "charges", "plan"]
    logged = read_log(str(project / "log"), "predictions", "churn")
    assert logged.num_rows == 2_500 and set(logged.column("role").to_pylist()) == {"batch"}


def test_a_bad_chunk_names_its_rows_and_leaves_no_output(project: Path) -> None:
    rows = frame(300, seed=2)
    rows.loc[250, "plan"] = "gold"
    rows.to_parquet(project / "rows.parquet")
    target = project / "scored.parquet"
    with pytest.raises(InputSchemaError, match=r"rows 200–299: column 'plan': unseen category 'gold'"):
        predict_file("churn@production", project / "rows.parquet", target, chunk_size=100)
    assert not target.exists() and not list(project.glob(".scored.parquet*"))


@pytest.mark.s3
def test_batch_scoring_reads_a_glob_in_object_storage_and_writes_there(
    project: Path, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv("MOLEN_OBJECTS_S3_ENDPOINT_URL", s3_endpoint)  # the endpoint s3:// URLs use
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    parts = [frame(n, seed=10 + n) for n in (300, 1, 700)]
    for index, part in enumerate(parts):
        part.to_parquet(project / f"part-{index}.parquet")
        s3.upload_file(str(project / f"part-{index}.parquet"), s3_bucket, f"in/part-{index}.parquet")
    seen: list[tuple[int, int | None]] = []
    result = predict_file(
        "churn@production",
        f"s3://{s3_bucket}/in/*.parquet",
        f"s3://{s3_bucket}/out/scored.parquet",
        chunk_size=256,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert result.rows == 1_001 and result.output == f"s3://{s3_bucket}/out/scored.parquet"
    assert seen[-1] == (1_001, 1_001)  # the total is known from the files' footers
    s3.download_file(s3_bucket, "out/scored.parquet", str(project / "scored.parquet"))
    scored = pd.read_parquet(project / "scored.parquet")
    rows = pd.concat(parts, ignore_index=True)
    assert scored["prediction"].tolist() == molen.load_model("churn/2").predict(rows).tolist()
    # nothing matches: a clear error, and nothing is written
    from molen.errors import NotFoundError

    nowhere = f"s3://{s3_bucket}/nothing/*.parquet"
    with pytest.raises(NotFoundError, match=r"nothing/\*\.parquet: no \.parquet or \.csv files there"):
        predict_file("churn@production", nowhere, f"s3://{s3_bucket}/x.parquet")
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="x.parquet")
    assert listed.get("KeyCount", 0) == 0
    # a bad chunk after good ones: the upload is aborted, no half file appears in the bucket
    bad = frame(600, seed=3)
    bad.loc[500, "plan"] = "gold"
    bad.to_parquet(project / "bad.parquet")
    s3.upload_file(str(project / "bad.parquet"), s3_bucket, "bad/bad.parquet")
    with pytest.raises(InputSchemaError, match="rows 500–599"):
        bad_glob, half = f"s3://{s3_bucket}/bad/*.parquet", f"s3://{s3_bucket}/half.parquet"
        predict_file("churn@production", bad_glob, half, chunk_size=100)
    assert s3.list_objects_v2(Bucket=s3_bucket, Prefix="half").get("KeyCount", 0) == 0


@pytest.mark.s3
@pytest.mark.parametrize("size", [1_000, 12 << 20])  # one PUT, or an upload in parts
def test_an_output_in_object_storage_appears_whole_or_not_at_all(
    s3_endpoint: str, s3_bucket: str, size: int
) -> None:
    import fsspec

    from molen.serving.batch import output_file

    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    half = f"{s3_bucket}/half.bin"
    with pytest.raises(RuntimeError, match="chunk 3 failed"), output_file(fs, half) as sink:
        sink.write(os.urandom(size))
        raise RuntimeError("chunk 3 failed")
    assert not fs.exists(half)
    with pytest.raises(RuntimeError), fs.open(half, "wb") as plain:  # what `with fs.open` does
        plain.write(b"half")
        raise RuntimeError("chunk 3 failed")
    assert fs.cat(half) == b"half"  # published: the reason output_file exists
    with output_file(fs, f"{s3_bucket}/whole.bin") as sink:
        sink.write(b"x" * size)
    assert fs.size(f"{s3_bucket}/whole.bin") == size


def test_predict_cli(project: Path) -> None:
    frame(50).to_parquet(project / "rows.parquet")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "molen",
            "predict",
            "churn@production",
            "-i",
            "rows.parquet",
            "-o",
            "p.parquet",
        ],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "Scored 50 rows with churn@production (version 2)" in done.stdout.replace("\n", " ")
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "molen",
            "predict",
            "churn@production",
            "-i",
            "nope.parquet",
            "-o",
            "p.parquet",
        ],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 3 and "no such file" in missing.stderr


# -- Docker ---------------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = text.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_docker_context_is_complete_and_serves(project: Path, tmp_path: Path) -> None:
    built = build_docker("churn@production", tmp_path / "ctx", workspace=open_workspace())
    context = built.folder
    instructions = dockerfile_instructions((context / "Dockerfile").read_text())
    keywords = [keyword for keyword, _ in instructions]
    assert (
        keywords[0] == "FROM"
        and instructions[0][1].startswith("python:3.")
        and instructions[0][1].endswith("-slim")
    )
    for keyword, rest in instructions:
        if keyword == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            for source in parts[:-1]:
                assert (context / source).exists(), f"COPY {source}: not in the build context"
    user = next(rest for keyword, rest in instructions if keyword == "USER")
    assert user not in {"root", "0"}
    assert keywords.index("USER") > keywords.index("RUN")
    health = next(rest for keyword, rest in instructions if keyword == "HEALTHCHECK")
    assert "/v2/health/ready" in health
    entry = json.loads(next(rest for keyword, rest in instructions if keyword == "ENTRYPOINT"))
    assert entry[:5] == ["python", "-m", "molen", "serve", "churn@production"]
    requirements = (context / "requirements.txt").read_text().split()
    assert requirements and all("==" in line for line in requirements)
    names = {line.split("==")[0].lower() for line in requirements}
    assert {"fastapi", "uvicorn", "scikit-learn", "pandas", "orjson"} <= names
    # the bundled project serves the model with no store outside the context
    app = build_app(ServeOptions(uri="churn@production", project=str(context / "app"), poll_interval=0))
    with TestClient(app) as client:
        assert client.get("/health").json()["version"] == "2"
        assert (
            client.post("/predict", json=[ROW]).json()["predictions"]
            == molen.load_model("churn/2").predict([ROW]).tolist()
        )
    # and the molen copied into the context is the one that runs there
    env = {**os.environ, "PYTHONPATH": str(context)}
    found = subprocess.run(
        [sys.executable, "-c", "import molen; print(molen.__file__)"],
        cwd=context / "app",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip().startswith(str(context / "molen"))
    with pytest.raises(ConflictError, match="not empty"):
        build_docker("churn@production", context, workspace=open_workspace())


@pytest.mark.slow
def test_docker_requirements_resolve(project: Path, tmp_path: Path) -> None:
    built = build_docker("churn/2", tmp_path / "ctx", workspace=open_workspace())
    resolved = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--no-deps",
            "--quiet",
            "--only-binary=:all:",
            "-r",
            str(built.folder / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resolved.returncode == 0, resolved.stderr[-2000:]


# -- Kubernetes -------------------------------------------------------------------------------------------


def test_kubernetes_manifests(project: Path, tmp_path: Path) -> None:
    built = build_kubernetes(
        "churn@production", tmp_path / "k8s", workspace=open_workspace(), image="registry.local/churn:2"
    )
    docs = {path.stem: yaml.safe_load(path.read_text()) for path in built.folder.glob("*.yaml")}
    assert set(docs) == {"deployment", "service", "horizontalpodautoscaler"}
    deployment, service, hpa = docs["deployment"], docs["service"], docs["horizontalpodautoscaler"]
    assert (deployment["apiVersion"], service["apiVersion"], hpa["apiVersion"]) == (
        "apps/v1",
        "v1",
        "autoscaling/v2",
    )
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == "registry.local/churn:2"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    paths = {
        container[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    assert paths == {"/v2/health/live", "/v2/health/ready"}
    port = container["ports"][0]
    assert port["containerPort"] == 8080 and service["spec"]["ports"][0]["targetPort"] == port["name"]
    app = build_app(ServeOptions(uri="churn@production", project=str(project), poll_interval=0))
    with TestClient(app) as client:
        for path in [*paths, pod["metadata"]["annotations"]["prometheus.io/path"]]:
            assert client.get(path).status_code == 200, path
    assert "&id" not in (built.folder / "deployment.yaml").read_text()

"""``molen import mlflow``: an MLflow store's history moved into molen, idempotently.

The source is read with MLflow's own client (``mlflow-skinny``), so any store it reads works:
an ``sqlite:///mlflow.db`` (or other database) file store, or a running ``http://`` server.

* Experiments by name; runs under their MLflow ids (32 hex characters: molen's form too), with
  name, user, times, status, params, tags, every metric's full history, and their artifacts
  (bytes stored by hash, as molen stores any artifact).
* Registered models: each version's files become artifacts of its run under
  ``mlflow-models/<model id>/``, registered with the same number and flavor ``mlflow``, and
  served back to MLflow clients by ``molen server``; aliases follow.

Rerunning imports only what is new: a run whose id molen has, or a version whose number the
model has, is skipped and counted as such.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.errors import MissingDependencyError, NotFoundError

if TYPE_CHECKING:
    from molen.workspace import Workspace

__all__ = ["ImportSummary", "import_mlflow"]

IMPORT_HOST = "mlflow-client"  # like runs the MLflow API makes: never reaped as dead
MODELS = "mlflow-models"


class ImportSummary(NamedTuple):
    """What was imported, and what was already there."""

    experiments: int
    runs: int
    runs_skipped: int
    metric_values: int
    artifacts: int
    versions: int
    versions_skipped: int
    aliases: int


@contextlib.contextmanager
def _inside(folder: str | None) -> Iterator[None]:
    """Run with ``folder`` as the working directory (relative artifact locations of a file store)."""
    if folder is None:
        yield
        return
    here = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def _client(source: str) -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise MissingDependencyError(
            "importing from MLflow needs its client: pip install mlflow-skinny"
        ) from None
    return MlflowClient(tracking_uri=source)


def _files(client: Any, run_id: str, path: str | None = None) -> Iterator[Any]:
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            yield from _files(client, run_id, item.path)
        else:
            yield item


def import_mlflow(
    source: str,
    *,
    workspace: Workspace,
    artifacts: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ImportSummary:
    """Import everything ``source`` holds that molen does not have yet."""
    from mlflow.entities import ViewType

    from molen.entities import Artifact, Metric

    client = _client(source)
    store = workspace.metadata
    objects = workspace.objects
    step = progress or (lambda _what, _done, _total: None)
    counts = dict.fromkeys(ImportSummary._fields, 0)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    known_ids: set[str] = set()
    for experiment in experiments:
        target = store.get_or_create_experiment(experiment.name)
        counts["experiments"] += 1
        runs = list(_all_runs(client, experiment.experiment_id, ViewType.ALL))
        for number, run in enumerate(runs, 1):
            step(f"runs of {experiment.name}", number, len(runs))
            run_id = run.info.run_id
            known_ids.add(run_id)
            try:
                store.get_run(run_id)
                counts["runs_skipped"] += 1
                continue
            except NotFoundError:
                pass
            tags = {key: str(value) for key, value in run.data.tags.items()}
            store.create_run(
                run_id=run_id,
                experiment_id=target.id,
                name=run.info.run_name or tags.get("mlflow.runName") or run_id[:8],
                start_time=int(run.info.start_time or time.time() * 1000),
                user=run.info.user_id or None,
                host=IMPORT_HOST,
                tags={**tags, "molen.imported_from": "mlflow"},
            )
            history: list[Any] = []
            for key in run.data.metrics:
                history += [
                    Metric(key, float(m.value), int(m.step or 0), int(m.timestamp or 0))
                    for m in client.get_metric_history(run_id, key)
                ]
            params = {key: str(value) for key, value in run.data.params.items()}
            for start in range(0, max(len(history), 1), 5000):
                store.log_batch(
                    run_id, params=params if start == 0 else None, metrics=history[start : start + 5000]
                )
            counts["metric_values"] += len(history)
            with tempfile.TemporaryDirectory(prefix="molen-import-") as folder, _inside(artifacts):
                for item in _files(client, run_id):
                    local = client.download_artifacts(run_id, item.path, folder)
                    digest = objects.put_file(local)
                    store.add_artifact(run_id, Artifact(item.path, digest, Path(local).stat().st_size))
                    counts["artifacts"] += 1
            if run.info.status in {"FINISHED", "FAILED", "KILLED"}:
                store.end_run(run_id, run.info.status, int(run.info.end_time or run.info.start_time or 0))
            counts["runs"] += 1
    _import_models(client, workspace, artifacts, counts, step)
    return ImportSummary(**counts)


def _all_runs(client: Any, experiment_id: str, view: Any) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], run_view_type=view, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _import_models(
    client: Any, workspace: Workspace, artifacts: str | None, counts: dict[str, int], step: Any
) -> None:
    import mlflow

    from molen.entities import Artifact

    store, objects = workspace.metadata, workspace.objects
    registry = store.registry
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name='{model.name}'")
        try:
            have = {v.version for v in registry.list_versions(model.name)}
        except NotFoundError:
            have = set()
        for number, version in enumerate(sorted(versions, key=lambda v: int(v.version)), 1):
            step(f"versions of {model.name}", number, len(versions))
            if int(version.version) in have:
                counts["versions_skipped"] += 1
                continue
            if not version.run_id:
                continue  # a version with no run has nothing in molen to hang on
            run = store.get_run(version.run_id)
            model_id = f"m-{uuid.uuid4().hex}"
            mlmodel = None
            with tempfile.TemporaryDirectory(prefix="molen-import-") as folder, _inside(artifacts):
                uri = client.get_model_version_download_uri(model.name, version.version)
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))
                for path in sorted(p for p in local.rglob("*") if p.is_file()):
                    relative = path.relative_to(local).as_posix()
                    digest = objects.put_file(path)
                    store.add_artifact(
                        run.id, Artifact(f"{MODELS}/{model_id}/{relative}", digest, path.stat().st_size)
                    )
                    if relative == "MLmodel":
                        mlmodel = digest
            if mlmodel is None:
                continue
            record = {
                "model_id": model_id,
                "experiment_id": str(run.experiment_id),
                "name": model.name,
                "creation_timestamp_ms": int(version.creation_timestamp or 0),
                "last_updated_timestamp_ms": int(version.last_updated_timestamp or 0),
                "artifact_uri": f"mlflow-artifacts:/{run.experiment_id}/models/{model_id}/artifacts",
                "status": "LOGGED_MODEL_READY",
                "model_type": "",
                "source_run_id": run.id,
                "tags": {},
            }
            objects.put_named(f"mlflow/models/{model_id}", json.dumps(record).encode())
            registry.create_version(
                model.name,
                run_id=run.id,
                artifact_path=f"{MODELS}/{model_id}",
                digest=mlmodel,
                flavor="mlflow",
                user=version.user_id or None,
                description=version.description or None,
                number=int(version.version),
            )
            counts["versions"] += 1
        for alias, number in (getattr(model, "aliases", None) or {}).items():
            if registry.alias_version(model.name, alias) != int(number):
                registry.set_alias(model.name, alias, int(number), user="mlflow-import")
                counts["aliases"] += 1

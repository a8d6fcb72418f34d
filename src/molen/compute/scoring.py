"""Batch scoring on a Ray cluster: ``molen predict NAME@ALIAS --input s3://…/*.parquet
--output s3://…/scored/ --executor ray``.

The input is a set of Parquet files (a glob, or a folder/prefix holding them); each file is one
task. A worker loads the model from the shared stores (the same hash-checked package as
everywhere, once per worker), reads its file a row group at a time in batches of
``chunk_size`` (so its memory follows the file's row groups, not the whole input), validates
and scores each batch exactly as local `molen predict` does
(:func:`molen.serving.batch.score_chunk`), optionally logs the rows to the shared prediction
log, and writes ``OUTPUT/<input file name>``: one output file per input file, which appears
whole or not at all (a temporary name renamed for folders; in object storage an upload in
parts, completed at the end and aborted on an error). The driver resolves the alias once, so
every file is scored by the same version, and reports progress as files complete.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.errors import UsageError

if TYPE_CHECKING:
    from molen.workspace import Workspace

__all__ = ["ScoredFile", "predict_on_ray", "score_partition"]


class ScoredFile(NamedTuple):
    """One input file scored by a worker."""

    source: str
    target: str
    rows: int
    seconds: float
    version: int | None


#: the model this worker process loaded last (``uri`` is pinned to a version by the driver)
_models: dict[tuple[str, str | None, str], Any] = {}


def score_partition(
    uri: str,
    source: str,
    target: str,
    *,
    chunk_size: int,
    env: dict[str, str],
    log: bool,
) -> ScoredFile:
    """What a worker does for one file: load the model from the shared stores named in ``env``,
    score ``source`` batch by batch into ``target``; the rows scored."""
    import pyarrow.parquet as pq

    from molen.registry.service import load_model
    from molen.serving.batch import filesystem, output_file, score_chunk
    from molen.serving.predlog import PredictionLog, log_storage_options
    from molen.workspace import open_workspace

    os.environ.update(env)  # the stores' URLs (no secrets: those are the worker's own)
    workspace = open_workspace(flags={"tracking.uri": env["MOLEN_TRACKING_URI"]})
    options = log_storage_options(source, workspace)
    started = time.perf_counter()
    key = (env["MOLEN_TRACKING_URI"], env.get("MOLEN_OBJECTS_URL"), uri)
    model = _models.get(key)
    if model is None:  # a worker scores many files with one model: loaded (and checked) once
        _models.clear()
        model = _models[key] = load_model(uri, workspace=workspace)
    prediction_log = None
    if log:
        root = str(workspace.settings["serving.prediction_log"])
        prediction_log = PredictionLog(root, storage_options=log_storage_options(root, workspace))
    fs_in, path_in = filesystem(source, options)
    fs_out, path_out = filesystem(target, log_storage_options(target, workspace))
    local = "://" not in target or target.startswith("file://")
    written = path_out if not local else f"{path_out}.{os.getpid()}.tmp"
    rows = 0
    writer = None
    try:
        with fs_in.open(path_in, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            if local:
                fs_out.makedirs(os.path.dirname(path_out) or ".", exist_ok=True)
            with output_file(fs_out, written) as sink:  # aborted, not published, on an error
                for batch in parquet.iter_batches(batch_size=chunk_size):
                    chunk = batch.to_pandas()
                    table = score_chunk(model, chunk, rows, prediction_log)
                    if writer is None:
                        writer = pq.ParquetWriter(sink, table.schema, compression="zstd")
                    writer.write_table(table)
                    rows += len(chunk)
                if writer is not None:
                    writer.close()
                    writer = None
        if rows == 0:
            fs_out.rm(written)
        elif local:
            fs_out.mv(written, path_out)
    finally:
        if writer is not None:
            writer.close()
        if local and fs_out.exists(written) and written != path_out:
            fs_out.rm(written)
        if prediction_log is not None:
            prediction_log.close()
    return ScoredFile(source, target, rows, time.perf_counter() - started, model.version)


def predict_on_ray(
    uri: str,
    workspace: Workspace,
    source: str,
    output: str,
    *,
    chunk_size: int,
    log: bool,
    address: str | None = None,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[ScoredFile], None] | None = None,
) -> list[ScoredFile]:
    """Score every Parquet file ``source`` names, one Ray task each, into the folder or prefix
    ``output``, with the model ``uri`` of the workspace's shared stores; ``on_start(files)``
    once they are listed, ``on_done(scored)`` as each finishes. Ctrl-C cancels what is left;
    a file that fails fails the job, with the worker's one-line error."""
    from molen.compute import cluster
    from molen.config import project_config
    from molen.serving.batch import input_files
    from molen.serving.predlog import log_storage_options

    env = cluster.require_shared_stores(workspace)
    log_root = str(workspace.settings["serving.prediction_log"] or "")
    if log and "://" not in log_root:
        raise UsageError(
            f"--log with --executor ray: the prediction log is the folder {log_root} on this machine; "
            "set serving.prediction_log to s3://bucket/log (MOLEN_SERVING_PREDICTION_LOG)"
        )
    if log:
        env["MOLEN_SERVING_PREDICTION_LOG"] = log_root
    if "://" not in output:
        raise UsageError(
            f"--output {output}: the workers write it; give a bucket prefix (s3://bucket/scored/)"
        )
    sources = input_files(source, log_storage_options(source, workspace))
    names = [found.rstrip("/").rsplit("/", 1)[-1] for found in sources]
    if len(set(names)) != len(names):
        raise UsageError("--input: two files have the same name; the outputs are named after the inputs")
    from molen.registry.service import resolve

    found = resolve(uri, workspace=workspace)  # every file scored by this one version, even if
    if found.version is not None:  # the alias moves meanwhile (and a worker loads it once)
        uri = f"{found.version.name}/{found.version.version}"
    project = workspace.settings.project
    resources = cluster.resources_of(project_config(project) if project is not None else {})
    ray = cluster.connect(address)
    try:
        if on_start is not None:
            on_start(len(sources))
        folder = output.rstrip("/")
        options = {"max_retries": cluster.MAX_RETRIES, "retry_exceptions": False, **resources}
        remote = ray.remote(**options)(score_partition)
        pending = {
            remote.remote(uri, source, f"{folder}/{name}", chunk_size=chunk_size, env=env, log=log): index
            for index, (source, name) in enumerate(zip(sources, names, strict=True))
        }
        results: list[ScoredFile | None] = [None] * len(sources)
        for index, found, error in cluster.completed(ray, pending):
            if error is not None:
                cause = getattr(error, "cause", None) or error
                message = getattr(cause, "message", None) or str(cause).strip().splitlines()[-1]
                raise UsageError(f"scoring {sources[index]} failed on the cluster: {message}")
            results[index] = found
            if on_done is not None:
                on_done(found)
        return [r for r in results if r is not None]
    finally:
        cluster.leave(ray)

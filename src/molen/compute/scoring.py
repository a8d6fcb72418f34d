"""Batch scoring on a Ray cluster: ``molen predict NAME@ALIAS --input s3://…/*.parquet
--output s3://…/scored/ --executor ray``.

The input is a set of Parquet files (a glob, or a folder/prefix holding them); each file is one
task. A worker loads the model from the shared stores (the same hash-checked package as
everywhere), reads its file in row batches of ``chunk_size`` (so memory per worker is bounded by
that, not by the file), validates and scores each batch exactly as local `molen predict` does
(:func:`molen.serving.batch.score_chunk`), optionally logs the rows to the shared prediction log,
and writes ``OUTPUT/<input file name>``: one output file per input file, written whole (a
temporary name renamed for folders; a single PUT for object storage, which is atomic). The
driver reports progress as files complete.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from molen.errors import NotFoundError, UsageError

__all__ = ["ScoredFile", "partitions", "score_on_ray", "score_partition"]


class ScoredFile(NamedTuple):
    """One input file scored by a worker."""

    source: str
    target: str
    rows: int
    seconds: float
    version: int | None


def _filesystem(url: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    return fs, path


def partitions(url: str, storage_options: dict[str, Any]) -> list[str]:
    """The Parquet files ``url`` names: a glob (``s3://b/in/*.parquet``), a folder or prefix
    (every ``*.parquet`` under it), or one file; as full URLs, sorted."""
    fs, path = _filesystem(url, storage_options)
    protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
    if any(mark in path for mark in "*?["):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if p.endswith(".parquet")]
    elif fs.exists(path):
        found = [path]
    else:
        found = []
    files = sorted(p for p in found if p.endswith(".parquet"))
    if not files:
        raise NotFoundError(f"--input {url}: no .parquet files there")
    return [protocol + p if protocol and not p.startswith(protocol) else p for p in files]


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
    from molen.serving.batch import score_chunk
    from molen.serving.predlog import PredictionLog, log_storage_options
    from molen.workspace import open_workspace

    os.environ.update(env)  # the stores' URLs (no secrets: those are the worker's own)
    workspace = open_workspace(flags={"tracking.uri": env["MOLEN_TRACKING_URI"]})
    options = log_storage_options(source, workspace)
    started = time.perf_counter()
    model = load_model(uri, workspace=workspace)
    prediction_log = None
    if log:
        root = str(workspace.settings["serving.prediction_log"])
        prediction_log = PredictionLog(root, storage_options=log_storage_options(root, workspace))
    fs_in, path_in = _filesystem(source, options)
    fs_out, path_out = _filesystem(target, log_storage_options(target, workspace))
    local = "://" not in target or target.startswith("file://")
    written = path_out if not local else f"{path_out}.{os.getpid()}.tmp"
    rows = 0
    writer = None
    try:
        with fs_in.open(path_in, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            if local:
                fs_out.makedirs(os.path.dirname(path_out) or ".", exist_ok=True)
            with fs_out.open(written, "wb") as sink:
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


def score_on_ray(
    ray: Any,
    uri: str,
    sources: list[str],
    output: str,
    *,
    chunk_size: int,
    env: dict[str, str],
    log: bool,
    resources: dict[str, Any],
    on_done: Callable[[ScoredFile, int], None] | None = None,
) -> list[ScoredFile]:
    """Score every file of ``sources`` as one Ray task each into the folder ``output``; Ctrl-C
    cancels what is left. A failed file fails the job, with the worker's one-line error."""
    from molen.compute.cluster import MAX_RETRIES, completed

    names = [source.rstrip("/").rsplit("/", 1)[-1] for source in sources]
    if len(set(names)) != len(names):
        raise UsageError("--input: two files have the same name; the outputs are named after the inputs")
    folder = output.rstrip("/")
    remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, **resources)(score_partition)
    pending = {
        remote.remote(uri, source, f"{folder}/{name}", chunk_size=chunk_size, env=env, log=log): index
        for index, (source, name) in enumerate(zip(sources, names, strict=True))
    }
    results: list[ScoredFile | None] = [None] * len(sources)
    for index, found, error in completed(ray, pending):
        if error is not None:
            cause = getattr(error, "cause", None) or error
            message = getattr(cause, "message", None) or str(cause).strip().splitlines()[-1]
            raise UsageError(f"scoring {sources[index]} failed on the cluster: {message}")
        results[index] = found
        if on_done is not None:
            on_done(found, len(sources))
    return [r for r in results if r is not None]

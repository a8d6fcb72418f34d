"""Batch scoring: ``molen predict NAME@ALIAS --input big.parquet --output preds.parquet``.

The input is a file, a glob or a folder of Parquet files, local or in object storage
(``s3://bucket/in/*.parquet``, the same inputs ``--executor ray`` takes: see
:func:`input_files`). It is read in chunks (Parquet row batches, or CSV chunks), so files
larger than memory stream through; each chunk is checked against the signature, predicted, and
appended to the output Parquet file. A local output is written under a temporary name and
renamed when complete; an object-storage output appears when its upload completes (a killed
job leaves no half file either way). With a prediction log, every row is logged as the server
logs it (role ``batch``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.errors import InputSchemaError, InvalidValueError, NotFoundError, UsageError

if TYPE_CHECKING:
    from molen.models.predictor import Predictor
    from molen.serving.predlog import PredictionLog
    from molen.workspace import Workspace

__all__ = ["BatchResult", "input_files", "predict_file", "score_chunk"]

#: Called with (rows done, rows in all or None) after each chunk.
Progress = Callable[[int, int | None], None]


class BatchResult(NamedTuple):
    """What a batch job did."""

    rows: int
    chunks: int
    seconds: float
    output: Path | str
    version: int | None


def filesystem(url: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path inside it."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    return fs, path


def input_files(
    url: str, storage_options: dict[str, Any], *, suffixes: tuple[str, ...] = (".parquet",)
) -> list[str]:
    """The files ``url`` names: a glob (``s3://b/in/*.parquet``), a folder or prefix (every
    file with one of ``suffixes`` under it), or one file; as full URLs (or paths), sorted."""
    fs, path = filesystem(url, storage_options)
    protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
    if any(mark in path for mark in "*?["):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if p.endswith(suffixes)]
    elif fs.exists(path):
        found = [path]
    else:
        found = []
    files = sorted(p for p in found if p.endswith(suffixes))
    if not files:
        raise NotFoundError(f"--input {url}: no {' or '.join(suffixes)} files there")
    return [protocol + p if protocol and not p.startswith(protocol) else p for p in files]


def _chunks(
    sources: list[str], chunk_size: int, storage_options: dict[str, Any]
) -> tuple[Iterator[Any], int | None]:
    """The rows of every file of ``sources`` in chunks, and how many there are (None for CSV)."""
    import pyarrow.parquet as pq

    if all(source.endswith(".parquet") for source in sources):
        total = 0
        for source in sources:
            fs, path = filesystem(source, storage_options)
            with fs.open(path, "rb") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows

        def parquet() -> Iterator[Any]:
            for source in sources:
                fs, path = filesystem(source, storage_options)
                with fs.open(path, "rb") as handle:
                    for batch in pq.ParquetFile(handle).iter_batches(batch_size=chunk_size):
                        yield batch.to_pandas()

        return parquet(), total
    if len(sources) == 1 and sources[0].endswith((".csv", ".txt")):
        import pandas as pd

        fs, path = filesystem(sources[0], storage_options)

        def csv() -> Iterator[Any]:
            with fs.open(path, "rb") as handle:
                yield from pd.read_csv(handle, chunksize=chunk_size)

        return csv(), None
    raise UsageError(f"--input {sources[0]}: use .parquet files or one .csv file")


def _output_table(chunk: Any, predictions: Any, probabilities: Any | None, classes: list[Any] | None) -> Any:
    import pyarrow as pa

    table = pa.Table.from_pandas(chunk, preserve_index=False)
    table = table.append_column("prediction", pa.array(predictions.tolist()))
    if probabilities is not None and classes is not None:
        for index, label in enumerate(classes):
            table = table.append_column(f"probability_{label}", pa.array(probabilities[:, index]))
    return table


def predict_file(
    uri: str,
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    chunk_size: int = 100_000,
    log_root: str | None = None,
    workspace: Workspace | None = None,
    progress: Progress | None = None,
) -> BatchResult:
    """Score every row of ``source`` with the model ``uri`` into ``output`` (Parquet)."""
    import pyarrow.parquet as pq

    from molen.registry.service import load_model
    from molen.workspace import open_workspace

    if chunk_size < 1:
        raise InvalidValueError("--chunk-size must be at least 1")
    workspace = workspace or open_workspace()
    from molen.serving.predlog import log_storage_options

    source, target = os.fspath(source), os.fspath(output)
    if not target.endswith(".parquet"):
        raise UsageError(f"--output {target}: write a .parquet file")
    if "://" in source or any(mark in source for mark in "*?["):
        sources = input_files(source, log_storage_options(source, workspace), suffixes=(".parquet", ".csv"))
    elif not Path(source).is_file():
        raise NotFoundError(f"--input {source}: no such file")
    else:
        sources = [source]
    model = load_model(uri, workspace=workspace)
    chunks, total = _chunks(sources, chunk_size, log_storage_options(source, workspace))
    prediction_log = None
    if log_root:
        from molen.serving.predlog import PredictionLog

        prediction_log = PredictionLog(log_root, storage_options=log_storage_options(log_root, workspace))
    remote = "://" in target and not target.startswith("file://")
    local_target = None if remote else Path(target.removeprefix("file://"))
    started = time.perf_counter()
    done = count = 0

    def write_all(where: Any) -> None:
        nonlocal done, count
        writer = None
        try:
            for chunk in chunks:
                table = score_chunk(model, chunk, done, prediction_log)
                if writer is None:
                    writer = pq.ParquetWriter(where, table.schema, compression="zstd")
                writer.write_table(table)
                done += len(chunk)
                count += 1
                if progress is not None:
                    progress(done, total)
            if writer is None:
                raise InvalidValueError(f"--input {source} has no rows")
        finally:
            if writer is not None:
                writer.close()

    try:
        if local_target is not None:
            local_target.parent.mkdir(parents=True, exist_ok=True)
            temporary = local_target.with_name(f".{local_target.name}.{os.getpid()}.tmp")
            try:
                write_all(temporary)
                os.replace(temporary, local_target)
            finally:
                temporary.unlink(missing_ok=True)
        else:  # streamed up in parts: the object appears when complete, or not at all
            fs, path = filesystem(target, log_storage_options(target, workspace))
            with output_file(fs, path) as sink:
                write_all(sink)
    finally:
        if prediction_log is not None:
            prediction_log.close()
    written: Path | str = local_target if local_target is not None else target
    return BatchResult(done, count, time.perf_counter() - started, written, model.version)


@contextlib.contextmanager
def output_file(fs: Any, path: str) -> Iterator[Any]:
    """``path`` of the fsspec filesystem ``fs`` open for writing, kept only if the block ends
    without an error. In object storage a failed block aborts the upload (nothing appears at
    ``path``: closing, as ``with fs.open(...)`` does, would publish the half written so far)."""
    sink = fs.open(path, "wb")
    try:
        yield sink
    except BaseException:
        if hasattr(sink, "buffer") and callable(getattr(sink, "discard", None)):
            with contextlib.suppress(Exception):
                sink.discard()  # an upload in parts (S3: the multipart upload is aborted)
            sink.closed = True
        else:
            sink.close()
        raise
    sink.close()


def score_chunk(model: Predictor, chunk: Any, offset: int, prediction_log: PredictionLog | None) -> Any:
    """Validate and score one chunk (rows ``offset``… of the input); the output table."""
    try:
        frame = model.validate(chunk)
    except InputSchemaError as exc:
        raise InputSchemaError(
            f"rows {offset:,}–{offset + len(chunk) - 1:,}: {exc.message}", column=exc.column
        ) from None
    predictions, probabilities = model.predict_both_validated(frame)
    if prediction_log is not None:
        import uuid

        from molen.serving.predlog import PredictionBatch

        prefix = uuid.uuid4().hex
        ids = [f"{prefix}-{index}" for index in range(len(chunk))]
        batch = PredictionBatch(
            model.signature.names, frame, ids, str(model.version), "batch", 0.0, predictions, probabilities
        )
        prediction_log.append("predictions", model.name or "model", batch, len(ids))
    return _output_table(chunk, predictions, probabilities, model.classes)

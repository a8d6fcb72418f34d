"""Batch scoring: ``molen predict NAME@ALIAS --input big.parquet --output preds.parquet``.

The input is read in chunks (Parquet row batches, or CSV chunks), so files larger than memory
stream through; each chunk is checked against the signature, predicted, and appended to the
output Parquet file, which is written under a temporary name and renamed when complete (a
killed job leaves no half file). With a prediction log, every row is logged as the server logs
it (role ``batch``).
"""

from __future__ import annotations

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

__all__ = ["BatchResult", "predict_file", "score_chunk"]

#: Called with (rows done, rows in all or None) after each chunk.
Progress = Callable[[int, int | None], None]


class BatchResult(NamedTuple):
    """What a batch job did."""

    rows: int
    chunks: int
    seconds: float
    output: Path
    version: int | None


def _chunks(source: Path, chunk_size: int) -> tuple[Iterator[Any], int | None]:
    import pandas as pd

    if source.suffix == ".parquet":
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(source)
        total = handle.metadata.num_rows
        return (batch.to_pandas() for batch in handle.iter_batches(batch_size=chunk_size)), total
    if source.suffix in {".csv", ".txt"}:
        return iter(pd.read_csv(source, chunksize=chunk_size)), None
    raise UsageError(f"--input {source}: use a .parquet or .csv file")


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
    source, target = Path(source), Path(output)
    if not source.is_file():
        raise NotFoundError(f"--input {source}: no such file")
    if target.suffix != ".parquet":
        raise UsageError(f"--output {target}: write a .parquet file")
    workspace = workspace or open_workspace()
    model = load_model(uri, workspace=workspace)
    chunks, total = _chunks(source, chunk_size)
    prediction_log = None
    if log_root:
        from molen.serving.predlog import PredictionLog, log_storage_options

        prediction_log = PredictionLog(log_root, storage_options=log_storage_options(log_root, workspace))
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    started = time.perf_counter()
    done = count = 0
    writer = None
    try:
        for chunk in chunks:
            table = score_chunk(model, chunk, done, prediction_log)
            if writer is None:
                writer = pq.ParquetWriter(temporary, table.schema, compression="zstd")
            writer.write_table(table)
            done += len(chunk)
            count += 1
            if progress is not None:
                progress(done, total)
        if writer is None:
            raise InvalidValueError(f"--input {source} has no rows")
        writer.close()
        writer = None
        os.replace(temporary, target)
    finally:
        if writer is not None:
            writer.close()
        temporary.unlink(missing_ok=True)
        if prediction_log is not None:
            prediction_log.close()
    return BatchResult(done, count, time.perf_counter() - started, target, model.version)


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

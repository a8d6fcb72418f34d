"""The prediction log: every answered row, and the feedback that arrives later, as Parquet.

Layout under the log's root (a folder, by default ``.molen/log``, or any fsspec URL)::

    predictions/model=churn/date=2026-11-27/part-<time>-<uuid>.parquet
    feedback/model=churn/date=2026-11-27/part-<time>-<uuid>.parquet

Hive-style partitions, so pandas, polars and DuckDB read a model's log (or one day of it) with
one glob (the ``model`` and ``date`` columns come from the folder names). A prediction row holds
``request_id``, ``timestamp`` (UTC), ``version``, ``role`` (``champion``, ``canary`` or
``shadow``), ``latency_ms``, ``inputs`` (a struct with one field per input column),
``prediction`` and, for classifiers, ``probability`` (of the predicted class) and
``probabilities`` (a list, in class order). A feedback row holds ``request_id``, ``timestamp``
and ``truth``.

Batches are handed to :meth:`PredictionLog.append`, which never blocks and never raises: a
buffer bounded in rows takes them, and one background thread, woken every ``flush_interval``
seconds (or when ``max_rows`` rows wait), turns them into one Arrow table per model and writes a
file per partition. When the buffer is full or a write fails, the rows are counted in
:attr:`PredictionLog.dropped` (``/metrics`` reports it) and a warning is logged, and serving goes
on. Each file is written under a temporary name and renamed whole.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "PredictionBatch",
    "PredictionLog",
    "batches_to_arrow",
    "log_dataset",
    "log_storage_options",
    "read_log",
    "utc_now",
]

log = logging.getLogger("molen.serving")


def utc_now() -> datetime:
    """The timestamp rows carry."""
    return datetime.now(timezone.utc)


class PredictionBatch:
    """Answered rows for the log, kept as the request left them (the checked input as a float
    matrix or a frame, the predictions as arrays); the writer thread turns many batches into
    one Arrow table, column by column, so logging costs a request almost nothing."""

    __slots__ = (
        "ids",
        "inputs",
        "latency_ms",
        "names",
        "predictions",
        "probabilities",
        "role",
        "timestamp",
        "version",
    )

    def __init__(
        self,
        names: list[str],
        inputs: Any,
        ids: list[str],
        version: str,
        role: str,
        latency_ms: float,
        predictions: Any,
        probabilities: Any | None,
    ) -> None:
        self.names = names
        self.inputs = inputs
        self.ids = ids
        self.version = version
        self.role = role
        self.latency_ms = latency_ms
        self.predictions = predictions
        self.probabilities = probabilities
        self.timestamp = time.time_ns() // 1000  # microseconds since the epoch, UTC

    def column(self, index: int) -> Any:
        """Input column ``index`` as a NumPy array."""
        if hasattr(self.inputs, "iloc"):
            return self.inputs.iloc[:, index].to_numpy()
        return self.inputs[:, index]


def batches_to_arrow(batches: list[PredictionBatch]) -> Any:
    """One table of many batches with the same input columns: each column concatenated once."""
    import numpy as np
    import pyarrow as pa

    sizes = np.array([len(batch.ids) for batch in batches])
    names = batches[0].names
    if all(isinstance(batch.inputs, np.ndarray) for batch in batches):  # numeric rows: one stack
        stacked = np.vstack([batch.inputs for batch in batches])
        inputs = [pa.array(stacked[:, index]) for index in range(len(names))]
    else:
        inputs = [
            pa.array(np.concatenate([batch.column(index) for batch in batches]), from_pandas=True)
            for index in range(len(names))
        ]
    stamps = np.array([batch.timestamp for batch in batches], dtype=np.int64)
    ids: list[str] = []
    for batch in batches:
        ids.extend(batch.ids)
    columns: dict[str, Any] = {
        "request_id": pa.array(ids, pa.string()),
        "timestamp": pa.array(np.repeat(stamps, sizes)).cast(pa.timestamp("us", tz="UTC")),
        "version": pa.array(
            np.repeat(np.array([b.version for b in batches], dtype=object), sizes), pa.string()
        ),
        "role": pa.array(np.repeat(np.array([b.role for b in batches], dtype=object), sizes), pa.string()),
        "latency_ms": pa.array(np.repeat(np.array([b.latency_ms for b in batches]), sizes), pa.float64()),
        "inputs": pa.StructArray.from_arrays(inputs, names=names),
        "prediction": pa.array(
            np.concatenate([np.asarray(b.predictions) for b in batches]), from_pandas=True
        ),
    }
    given = [batch.probabilities for batch in batches if batch.probabilities is not None]
    if given:  # rows answered without probabilities (MLflow's protocol) get nulls, not a narrower file
        width = np.asarray(given[0]).shape[1]
        probabilities = np.vstack(
            [
                np.asarray(batch.probabilities, dtype=np.float64)
                if batch.probabilities is not None
                else np.full((len(batch.ids), width), np.nan)
                for batch in batches
            ]
        )
        missing = np.isnan(probabilities).all(axis=1)
        best = np.where(missing, np.nan, np.nanmax(np.where(missing[:, None], 0.0, probabilities), axis=1))
        columns["probability"] = pa.array(best, from_pandas=True)
        lists = pa.FixedSizeListArray.from_arrays(pa.array(probabilities.ravel()), width)
        columns["probabilities"] = (
            pa.array(
                [None if gone else row for gone, row in zip(missing, lists.to_pylist(), strict=True)],
                pa.list_(pa.float64()),
            )
            if missing.any()
            else lists.cast(pa.list_(pa.float64()))
        )
    return pa.table(columns)


class PredictionLog:
    """A non-blocking writer of prediction and feedback rows into partitioned Parquet files."""

    def __init__(
        self,
        root: str,
        *,
        flush_interval: float = 2.0,
        max_rows: int = 50_000,
        capacity: int = 500_000,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.root = root.rstrip("/")
        self.flush_interval = flush_interval
        self.max_rows = max_rows
        self.capacity = capacity
        self.dropped = 0
        self.written = 0
        self._pending: deque[tuple[str, str, Any, int]] = deque()
        self._queued = 0  # rows appended and not yet taken by the writer
        self._storage_options = storage_options or {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flushes: list[threading.Event] = []
        self._closed = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="molen-prediction-log", daemon=True)
        self._thread.start()

    # -- the serving side: never blocks, never raises ------------------------------------------------

    def append(self, kind: str, model: str, batch: Any, rows: int) -> None:
        """Queue ``batch`` (``rows`` rows of ``kind``, ``predictions`` or ``feedback``, for
        ``model``): a list of row dicts, or a :class:`PredictionBatch`, turned into Arrow by the
        writer thread, not by the request that logs it. The writer is not woken per batch (a
        thread switch per request cost more than the logging): it wakes every
        ``flush_interval`` seconds, or when ``max_rows`` rows wait."""
        if self._closed:
            self._drop(rows, "the log is closed")
            return
        with self._lock:
            full = self._queued + rows > self.capacity
            if not full:
                self._queued += rows
                self._pending.append((kind, model, batch, rows))
                wake = self._queued >= self.max_rows
        if full:
            self._drop(rows, "the log's buffer is full (the sink is slower than the traffic)")
        elif wake:
            self._wake.set()

    def _drop(self, count: int, why: str) -> None:
        with self._lock:
            self.dropped += count
        log.warning("prediction log: dropped %d rows: %s", count, why)

    # -- the writer thread -------------------------------------------------------------------------

    def _take(self) -> dict[tuple[str, str], list[tuple[Any, int]]]:
        taken: dict[tuple[str, str], list[tuple[Any, int]]] = {}
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
            self._queued = 0
        for kind, model, batch, rows in items:
            taken.setdefault((kind, model), []).append((batch, rows))
        return taken

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            with self._lock:
                flushes, self._flushes = self._flushes, []
                stopping = self._stopping
            self._write(self._take())
            for done in flushes:
                done.set()
            if stopping:
                return

    def _write(self, pending: dict[tuple[str, str], list[tuple[Any, int]]]) -> None:
        for (kind, model), batches in pending.items():
            rows = sum(count for _, count in batches)
            if not rows:
                continue
            try:
                self._write_files(kind, model, [batch for batch, _ in batches])
                with self._lock:
                    self.written += rows
            except Exception as exc:  # a failing sink must not stop serving: count and go on
                self._drop(rows, f"writing to {self.root} failed: {exc}")

    def _write_files(self, kind: str, model: str, batches: list[Any]) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        tables = []
        groups: dict[tuple[str, ...], list[PredictionBatch]] = {}
        for batch in batches:
            if isinstance(batch, list):
                tables.append(pa.Table.from_pylist(batch))
            else:  # one table per set of input columns (a new version may take other columns)
                groups.setdefault(tuple(batch.names), []).append(batch)
        tables += [batches_to_arrow(group) for group in groups.values()]
        whole = pa.concat_tables(tables, promote_options="permissive")
        dates = pc.strftime(whole.column("timestamp"), format="%Y-%m-%d")
        for date in pc.unique(dates).to_pylist():
            table = whole.filter(pc.equal(dates, date))
            self._write_file(f"{kind}/model={model}/date={date}", table)

    def _write_file(self, folder: str, table: Any) -> None:
        import pyarrow.parquet as pq

        name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}.parquet"
        if "://" not in self.root:
            path = os.path.join(self.root, folder)
            os.makedirs(path, exist_ok=True)
            temporary = os.path.join(path, f".{name}.tmp")
            pq.write_table(table, temporary, compression="zstd")
            os.replace(temporary, os.path.join(path, name))
            return
        import fsspec

        fs, path = fsspec.core.url_to_fs(f"{self.root}/{folder}", **self._storage_options)
        temporary = f"{path}/.{name}.tmp"
        with fs.open(temporary, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
        fs.mv(temporary, f"{path}/{name}")

    # -- control -------------------------------------------------------------------------------------

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything appended so far; True when done within ``timeout`` seconds."""
        done = threading.Event()
        with self._lock:
            self._flushes.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending and stop the writer (the server's shutdown calls this)."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("prediction log: the writer did not finish within %.0f s", timeout)
            return
        self._write(self._take())  # anything appended while the writer finished


def log_storage_options(root: str, workspace: Any) -> dict[str, Any]:
    """fsspec options for a log in object storage: an ``s3://`` log goes to the same
    S3-compatible endpoint as the project's objects (``objects.s3_endpoint_url``)."""
    endpoint = workspace.settings["objects.s3_endpoint_url"]
    if endpoint and root.split("://", 1)[0] in {"s3", "s3a"}:
        return {"client_kwargs": {"endpoint_url": endpoint}}
    return {}


def log_dataset(root: str, kind: str, *, storage_options: dict[str, Any] | None = None) -> Any:
    """The PyArrow dataset of one kind of log (``predictions``, ``feedback``, ``explanations``)
    with its hive partitions, local or through fsspec; None when there is nothing yet."""
    import pyarrow.dataset as ds

    path = f"{root.rstrip('/')}/{kind}"
    if "://" not in path:
        if not os.path.isdir(path):
            return None
        return ds.dataset(path, format="parquet", partitioning="hive", ignore_prefixes=[".", "_"])
    import fsspec

    fs, inside = fsspec.core.url_to_fs(path, **(storage_options or {}))
    if not fs.exists(inside):
        return None
    return ds.dataset(
        inside, filesystem=fs, format="parquet", partitioning="hive", ignore_prefixes=[".", "_"]
    )


def read_log(
    root: str,
    kind: str = "predictions",
    model: str | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """The rows of a prediction log (or its feedback) as an Arrow table (all models, or one);
    the ``model`` and ``date`` columns come from the partition folders."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dataset = log_dataset(root, kind, storage_options=storage_options)
    if dataset is None:
        return pa.table({})
    table = dataset.to_table()
    if model is not None and table.num_rows:
        table = table.filter(pc.equal(table.column("model"), model))
    return table

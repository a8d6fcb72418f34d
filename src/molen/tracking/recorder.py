"""Buffered writes: a training loop appends to memory, a background thread writes batches.

``log_metric`` costs a validation and a deque append; params and tags wait in memory too.
One flusher thread per process writes every live recorder's buffer every
``tracking.flush_interval`` seconds (and beats each run's heartbeat), and a recorder flushes
on its own when its buffer grows past :data:`MAX_BUFFERED`. Ending a run, an exception,
SIGTERM and interpreter exit all flush, so nothing logged is lost unless the process is
killed with SIGKILL (then at most one interval).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque

from molen.entities import Metric
from molen.stores.metadata.sql import SqlMetadataStore

__all__ = ["MAX_BUFFERED", "RunRecorder", "flush_all"]

MAX_BUFFERED = 200_000
_log = logging.getLogger("molen.tracking")


class RunRecorder:
    """Holds the unwritten metrics of one run and writes them in batches."""

    def __init__(
        self,
        store: SqlMetadataStore,
        run_id: str,
        *,
        flush_interval: float,
        heartbeat_interval: float,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self._buffer: deque[Metric] = deque()
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._write_lock = threading.RLock()
        self._last_beat = time.monotonic()
        self.closed = False
        _Flusher.instance().register(self)

    def add_params(self, params: dict[str, str]) -> None:
        """Buffer params (checked for changed values by the caller, and again by the store)."""
        with self._write_lock:
            self._params.update(params)

    def add_tags(self, tags: dict[str, str]) -> None:
        """Buffer tags; a later value of the same tag wins."""
        with self._write_lock:
            self._tags.update(tags)

    def add(self, metric: Metric) -> None:
        """Buffer one metric value (validated by the caller)."""
        self._buffer.append(metric)
        if len(self._buffer) >= MAX_BUFFERED:
            self.flush()

    def flush(self, *, heartbeat: bool = False, end: tuple[str, int] | None = None) -> None:
        """Write every buffered metric now in one transaction (ending the run too, if ``end``)."""
        with self._write_lock:
            buffer = self._buffer
            batch = [buffer.popleft() for _ in range(len(buffer))]
            params, tags = self._params, self._tags
            beat = heartbeat or time.monotonic() - self._last_beat >= self.heartbeat_interval
            if not (batch or params or tags or beat or end):
                return
            self._params, self._tags = {}, {}
            try:
                self.store.log_batch(
                    self.run_id,
                    params=params,
                    tags=tags,
                    metrics=batch,
                    heartbeat=int(time.time() * 1000) if beat else None,
                    end=end,
                )
            except BaseException:
                # put everything back in order so a retry (or the final flush) still has it
                buffer.extendleft(reversed(batch))
                self._params = {**params, **self._params}
                self._tags = {**tags, **self._tags}
                raise
            if beat:
                self._last_beat = time.monotonic()

    def close(self, end: tuple[str, int] | None = None) -> None:
        """Flush and stop the background writes for this run; ``end`` = (status, time) ends it.

        If the write fails, the recorder stays open: its values are still buffered, the
        flusher keeps trying, and ``close`` can be called again."""
        self.flush(end=end)
        self.closed = True
        _Flusher.instance().unregister(self)


class _Flusher:
    """The one daemon thread that flushes every live recorder periodically."""

    _instance: _Flusher | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._recorders: weakref.WeakSet[RunRecorder] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def instance(cls) -> _Flusher:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def register(self, recorder: RunRecorder) -> None:
        with self._lock:
            self._recorders.add(recorder)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="molen-flusher", daemon=True)
                self._thread.start()

    def unregister(self, recorder: RunRecorder) -> None:
        with self._lock:
            self._recorders.discard(recorder)

    def recorders(self) -> list[RunRecorder]:
        with self._lock:
            return list(self._recorders)

    def _loop(self) -> None:
        while True:
            recorders = self.recorders()
            interval = min((r.flush_interval for r in recorders), default=1.0)
            self._wake.wait(interval)
            self._wake.clear()
            for recorder in recorders:
                if recorder.closed:
                    continue
                try:
                    recorder.flush()
                except Exception as exc:  # keep the loop alive; the final flush raises
                    _log.warning("molen: could not write metrics of run %s yet: %s", recorder.run_id[:8], exc)


def flush_all() -> None:
    """Flush every live recorder of this process (at exit and on SIGTERM)."""
    for recorder in _Flusher.instance().recorders():
        with contextlib.suppress(Exception):
            recorder.flush()


def _after_fork() -> None:
    _Flusher._instance = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)

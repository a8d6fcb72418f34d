"""The metadata store: experiments, runs, params, metrics, tags, artifacts, data versions.

Picked by URL (``sqlite:///…`` or ``postgresql+psycopg://…``); one open store per URL and process.
"""

from __future__ import annotations

import threading

from molen.stores.metadata.sql import SqlMetadataStore

__all__ = ["SqlMetadataStore", "close_metadata_stores", "open_metadata_store"]

_open: dict[str, SqlMetadataStore] = {}
_lock = threading.Lock()


def open_metadata_store(url: str) -> SqlMetadataStore:
    """The metadata store at ``url``, opened (and migrated) once per process."""
    with _lock:
        store = _open.get(url)
        if store is None:
            store = _open[url] = SqlMetadataStore(url)
        return store


def close_metadata_stores() -> None:
    """Close every store this process opened (tests, and forked workers, call this)."""
    with _lock:
        for store in _open.values():
            store.close()
        _open.clear()

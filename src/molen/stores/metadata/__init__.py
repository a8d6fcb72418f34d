"""The metadata store: experiments, runs, params, metrics, tags, artifacts, data versions.

Picked by URL (``sqlite:///…``, ``postgresql+psycopg://…``, or ``http(s)://`` for a ``molen server``,
whose client has the same methods); one open store per URL and process.
SQLAlchemy is imported when a store is opened, not with this package: the SQLite reader in
:mod:`.lite` answers quick searches without it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from molen.stores.metadata.sql import SqlMetadataStore

__all__ = ["SqlMetadataStore", "close_metadata_stores", "open_metadata_store"]

_open: dict[str, SqlMetadataStore] = {}
_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name == "SqlMetadataStore":
        from molen.stores.metadata.sql import SqlMetadataStore

        return SqlMetadataStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_metadata_store(url: str) -> SqlMetadataStore:
    """The metadata store at ``url``, opened (and migrated) once per process."""
    from molen.stores.metadata.sql import SqlMetadataStore

    with _lock:
        if url not in _open:
            if url.startswith(("http://", "https://")):  # a molen server: the same methods over HTTP
                from molen.stores.metadata.http import HttpMetadataStore

                _open[url] = HttpMetadataStore(url)  # type: ignore[assignment]
            else:
                _open[url] = SqlMetadataStore(url)
        return _open[url]


def close_metadata_stores() -> None:
    """Close every store this process opened (tests, and forked workers, call this)."""
    with _lock:
        for store in _open.values():
            store.close()
        _open.clear()

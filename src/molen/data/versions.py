"""Turn a file, a directory or a data frame into a stored data version.

A file's version is the hash of its bytes. A directory's version is the hash of its manifest:
a JSON document listing every file's relative path, hash and size, sorted by path, itself
stored as an object. A data frame (pandas, polars, Arrow) is written to Parquet and versioned
as those bytes.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molen.data.manifest import Manifest, ManifestEntry
from molen.errors import InvalidValueError, MissingDependencyError, NotFoundError
from molen.stores.objects.base import ObjectStore

__all__ = ["DataVersion", "version_of_frame", "version_of_path"]


@dataclass(frozen=True)
class DataVersion:
    """A stored version of some data: its hash, kind, total size and number of files."""

    digest: str
    kind: str  # file | directory | frame
    size: int
    file_count: int


def _files(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        found.extend(Path(folder) / name for name in names)
    return found


def version_of_path(path: str | os.PathLike[str], store: ObjectStore) -> DataVersion:
    """Store the file or directory at ``path`` and return its data version."""
    source = Path(path)
    if source.is_file():
        digest = store.put_file(source)
        return DataVersion(digest, "file", source.stat().st_size, 1)
    if source.is_dir():
        files = _files(source)

        def store_one(file: Path) -> ManifestEntry:
            return ManifestEntry(
                file.relative_to(source).as_posix(), store.put_file(file), file.stat().st_size
            )

        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            entries = list(pool.map(store_one, files))
        manifest = Manifest.of(entries)
        digest = store.put_bytes(manifest.to_bytes())
        return DataVersion(digest, "directory", manifest.size, len(entries))
    if source.exists():
        raise InvalidValueError(f"{source} is neither a file nor a directory")
    raise NotFoundError(f"{source} does not exist")


def version_of_frame(frame: Any, store: ObjectStore) -> DataVersion:
    """Store a pandas/polars DataFrame or Arrow table as Parquet and return its data version."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError(
            "logging a data frame needs pyarrow: pip install 'molen[frames]'"
        ) from None
    if isinstance(frame, pa.Table):
        table = frame
    elif hasattr(frame, "to_arrow"):  # polars
        table = frame.to_arrow()
    elif type(frame).__module__.startswith("pandas"):
        table = pa.Table.from_pandas(frame)
    else:
        raise InvalidValueError(
            f"log_input takes a path or a pandas/polars DataFrame or Arrow table, not {type(frame).__name__}"
        )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    data = buffer.getvalue()
    return DataVersion(store.put_bytes(data), "frame", len(data), 1)

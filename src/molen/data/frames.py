"""Reading a table a user names on the command line: a Parquet or CSV file, as a DataFrame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from molen.errors import NotFoundError, UsageError

__all__ = ["read_table"]


def read_table(path: str | Path, *, what: str) -> Any:
    """The pandas DataFrame in the ``.parquet`` or ``.csv`` file ``path``; ``what`` names it in
    errors (``--input rows.csv``, ``holdout data h.parquet``)."""
    import pandas as pd

    source = Path(path)
    if not source.is_file():
        raise NotFoundError(f"{what} {source}: no such file")
    if source.suffix == ".parquet":
        return pd.read_parquet(source)
    if source.suffix in {".csv", ".txt"}:
        try:
            return pd.read_csv(source)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"{what} {source}: not a readable CSV file ({str(exc).splitlines()[0]})"
            ) from None
    raise UsageError(f"{what} {source}: use a .parquet or .csv file")

"""Data versioning: files and folders identified by content hash, shared through remotes.

The functions here read tracked data as of any git revision; see :mod:`molen.data.api`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["open", "path", "read_bytes", "read_text"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("molen.data.api"), name)
    raise AttributeError(f"module 'molen.data' has no attribute {name!r}")

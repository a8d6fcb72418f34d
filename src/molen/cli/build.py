"""``molen build``: deployment packaging (the commands live beside ``molen serve``)."""

from __future__ import annotations

from molen.cli.serve import build_app_cli as app

__all__ = ["app"]

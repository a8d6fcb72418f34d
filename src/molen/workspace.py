"""The stores of one invocation, resolved from settings: what every service works against."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from molen.config import SETTINGS, Settings, load_settings
from molen.errors import UsageError

if TYPE_CHECKING:
    from molen.stores.metadata.sql import SqlMetadataStore
    from molen.stores.objects.base import ObjectStore

__all__ = ["Workspace", "open_workspace"]

_object_stores: dict[tuple[str, str | None, bool], ObjectStore] = {}
_lock = threading.Lock()


class Workspace:
    """Settings plus the metadata and object stores they name (opened on first use)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._metadata: SqlMetadataStore | None = None

    def __repr__(self) -> str:
        return f"Workspace({self.settings.project})"

    @property
    def metadata(self) -> SqlMetadataStore:
        if self._metadata is None:
            from molen.stores.metadata import open_metadata_store

            url = self.settings["tracking.uri"]
            if not url:
                raise UsageError("no metadata store configured: set tracking.uri")
            self._metadata = open_metadata_store(url)
        return self._metadata

    @property
    def objects(self) -> ObjectStore:
        tracking = str(self.settings["tracking.uri"] or "")
        if tracking.startswith(("http://", "https://")) and self.settings.source("objects.url") == "default":
            return self._server_objects(tracking)
        url = self.settings["objects.url"]
        if not url:
            raise UsageError(
                "no object store configured: set objects.url (MOLEN_OBJECTS_URL) to a folder or an s3:// URL"
            )
        endpoint = self.settings["objects.s3_endpoint_url"]
        verify = bool(self.settings["objects.verify"])
        key = (url, endpoint, verify)
        with _lock:
            store = _object_stores.get(key)
            if store is None:
                from molen.stores.objects import open_object_store

                store = _object_stores[key] = open_object_store(url, s3_endpoint_url=endpoint, verify=verify)
            return store

    def _server_objects(self, url: str) -> ObjectStore:
        """With a molen server for tracking and no object store of its own: the server's,
        through the server, or where it says when it runs with ``--artifacts-direct``."""
        verify = bool(self.settings["objects.verify"])
        key = (url, None, verify)
        with _lock:
            store = _object_stores.get(key)
            if store is None:
                from molen.stores.objects.http import HttpObjectStore, server_info

                info = server_info(url)
                if info.get("objects") == "direct" and info.get("objects_url"):
                    from molen.stores.objects import open_object_store

                    endpoint = self.settings["objects.s3_endpoint_url"] or info.get("s3_endpoint_url")
                    store = open_object_store(
                        str(info["objects_url"]), s3_endpoint_url=endpoint, verify=verify
                    )
                else:
                    store = HttpObjectStore(url, verify=verify)
                _object_stores[key] = store
            return store


_SETTING_ENVS = tuple(setting.env for setting in SETTINGS)
_workspaces: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[tuple[int, int] | None, Workspace]] = {}


def _config_signature(settings: Settings) -> tuple[int, int] | None:
    if settings.project is None:
        return None
    try:
        stat = settings.project.config_path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def open_workspace(start: Path | str | None = None, *, flags: Mapping[str, Any] | None = None) -> Workspace:
    """The workspace of the project at or above ``start`` (default: the current folder).

    Without flags, the result is reused while the folder, the ``MOLEN_…`` environment and
    ``molen.yaml`` stay the same, so a script starting a thousand runs resolves settings once.
    """
    if flags and any(value is not None for value in flags.values()):
        return Workspace(load_settings(start, flags=flags))
    environment = tuple((name, os.environ.get(name, "")) for name in _SETTING_ENVS)
    key = (os.path.abspath(start if start is not None else os.getcwd()), environment)
    cached = _workspaces.get(key)
    if cached is not None and cached[0] == _config_signature(cached[1].settings):
        return cached[1]
    workspace = Workspace(load_settings(start, flags=flags))
    with _lock:
        _workspaces[key] = (_config_signature(workspace.settings), workspace)
    return workspace

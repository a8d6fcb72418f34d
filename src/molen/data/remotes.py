"""Remotes: named object stores (a shared folder, ``s3://…``) that data is pushed to and pulled from.

Kept in ``molen.yaml`` (committed, so the team shares them)::

    remotes:
      origin:
        url: s3://ml-bucket/molen
        endpoint_url: http://minio.internal:9000   # optional: an S3-compatible server
    data:
      remote: origin                               # the default

Credentials never go here: they come from the storage library's usual configuration
(``AWS_ACCESS_KEY_ID``/``AWS_PROFILE``, …), so they never land in git, logs or errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molen.atomic import write_atomic
from molen.config import load_settings, project_config
from molen.errors import ConflictError, InvalidNameError, NotFoundError, UsageError
from molen.project import Project
from molen.stores.objects import ObjectStore, open_object_store

__all__ = ["Remote", "add_remote", "list_remotes", "open_remote", "remove_remote", "set_default_remote"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    endpoint_url: str | None = None
    default: bool = False


def _document(project: Project) -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()
    return yaml, yaml.load(project.config_path.read_text()) or {}


def _save(project: Project, yaml: Any, document: Any) -> None:
    import io

    buffer = io.StringIO()
    yaml.dump(document, buffer)
    write_atomic(project.config_path, buffer.getvalue().encode())


def list_remotes(project: Project) -> list[Remote]:
    """The remotes configured in ``molen.yaml``, the default marked."""
    document = project_config(project)  # the cached parse: no round-trip YAML parser to read
    default = (document.get("data") or {}).get("remote")
    found = []
    for name, entry in (document.get("remotes") or {}).items():
        entry = entry or {}
        found.append(Remote(str(name), str(entry.get("url", "")), entry.get("endpoint_url"), name == default))
    return found


def _check_url(url: str) -> None:
    if re.match(r"^[a-z0-9+]+://[^/@]*:[^/@]*@", url):
        raise UsageError(
            "remote URLs must not carry credentials; use the storage library's configuration "
            "(AWS_ACCESS_KEY_ID / AWS_PROFILE, …) instead"
        )


def add_remote(
    project: Project, name: str, url: str, *, endpoint_url: str | None = None, default: bool = False
) -> Remote:
    """Add a remote (refused if the name is taken); the first remote becomes the default."""
    if not _NAME.fullmatch(name):
        raise InvalidNameError(f"invalid remote name {name!r}: letters, digits, _ . - (up to 64)")
    _check_url(url)
    yaml, document = _document(project)
    remotes = document.setdefault("remotes", {})
    if name in remotes:
        raise ConflictError(f"remote {name!r} exists already; remove it first or pick another name")
    entry: dict[str, str] = {"url": url}
    if endpoint_url:
        entry["endpoint_url"] = endpoint_url
    remotes[name] = entry
    data = document.setdefault("data", {})
    if default or not data.get("remote"):
        data["remote"] = name
    _save(project, yaml, document)
    return Remote(name, url, endpoint_url, data["remote"] == name)


def remove_remote(project: Project, name: str) -> None:
    """Remove a remote (and the default if it was the default)."""
    yaml, document = _document(project)
    remotes = document.get("remotes") or {}
    if name not in remotes:
        raise NotFoundError(f"no remote named {name!r}; `molen remote list` shows them")
    del remotes[name]
    data = document.get("data") or {}
    if data.get("remote") == name:
        del data["remote"]
    _save(project, yaml, document)


def set_default_remote(project: Project, name: str) -> None:
    """Make ``name`` the remote that push, pull and fetch use by default."""
    yaml, document = _document(project)
    if name not in (document.get("remotes") or {}):
        raise NotFoundError(f"no remote named {name!r}; `molen remote list` shows them")
    document.setdefault("data", {})["remote"] = name
    _save(project, yaml, document)


def open_remote(project: Project, name: str | None = None) -> tuple[Remote, ObjectStore]:
    """The remote ``name`` (default: setting data.remote) opened as an object store."""
    remotes = {remote.name: remote for remote in list_remotes(project)}
    chosen = name or load_settings(project.root)["data.remote"]
    if not chosen:
        if not remotes:
            raise UsageError("no remote configured: add one with `molen remote add NAME URL`")
        raise UsageError(
            "several remotes and no default: name one with --remote, or `molen remote default NAME`"
        )
    remote = remotes.get(chosen)
    if remote is None:
        raise NotFoundError(f"no remote named {chosen!r}; `molen remote list` shows them")
    url = remote.url
    if "://" not in url and not os.path.isabs(url):
        url = str(Path(project.root, url))
    return remote, open_object_store(url, s3_endpoint_url=remote.endpoint_url)

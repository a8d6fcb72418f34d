"""Lineage both ways: a model version → its run → data versions → commit → environment, and a
data version → the runs that read or wrote it → the model versions those runs produced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from molen.errors import NotFoundError
from molen.registry.service import resolve
from molen.workspace import Workspace, open_workspace

__all__ = ["data_lineage", "model_lineage"]


def _pointer_of(path: str, workspace: Workspace) -> str | None:
    project = workspace.settings.project
    if project is None:
        return None
    candidate = project.root / f"{path}.molen"
    return f"{path}.molen" if candidate.is_file() else None


def model_lineage(uri: str, *, workspace: Workspace | None = None) -> dict[str, Any]:
    """The tree below the model ``uri``: version, run, data versions (with pointer files),
    commit and environment, as a JSON-ready dict."""
    from molen.models.package import read_manifest

    workspace = workspace or open_workspace()
    found = resolve(uri, workspace=workspace)
    manifest = read_manifest(workspace.objects, found.digest)
    version = found.version
    tree: dict[str, Any] = {
        "model": {
            "name": version.name if version else manifest.get("name"),
            "version": version.version if version else None,
            "aliases": list(version.aliases) if version else [],
            "digest": found.digest,
            "flavor": manifest["flavor"],
            "created": manifest.get("created"),
        },
        "run": None,
        "data": [],
        "code": dict(manifest.get("code") or {}),
        "environment": dict(manifest.get("libraries") or {}),
    }
    if found.run_id is not None:
        try:
            record = workspace.metadata.get_run(found.run_id)
        except NotFoundError:
            record = None
        if record is not None:
            tree["run"] = {
                "id": record.id,
                "name": record.name,
                "experiment": record.experiment,
                "status": record.status,
                "user": record.user,
                "start_time": record.start_time,
                "params": dict(record.params),
                "metrics": {k: v for k, v in record.metrics.items() if v == v},
            }
            tree["data"] = [
                {
                    "path": item.path,
                    "pointer": _pointer_of(item.path, workspace),
                    "digest": item.digest,
                    "role": item.role,
                    "kind": item.kind,
                    "size": item.size,
                    "files": item.file_count,
                }
                for item in record.inputs
            ]
            tags = record.tags
            tree["code"] = {
                key.removeprefix("molen.git."): value
                for key, value in tags.items()
                if key.startswith("molen.git.")
            } or tree["code"]
            tree["environment"]["command"] = tags.get("molen.command", "")
            packages = next((a for a in record.artifacts if a.path == "molen/packages.txt"), None)
            if packages is not None:
                tree["environment"]["packages_snapshot"] = packages.digest
    return tree


def _digest_of(target: str, workspace: Workspace) -> tuple[str, str]:
    """(data version hash, display path) of a pointer file, a tracked path, or a hash."""
    from molen.data.pointer import read_pointer

    project = workspace.settings.project
    base = project.root if project is not None else Path.cwd()
    path = Path(target)
    candidates = [path] if path.name.endswith(".molen") else [Path(f"{target}.molen"), path]
    for candidate in candidates:
        full = candidate if candidate.is_absolute() else Path.cwd() / candidate
        if full.is_file() and full.name.endswith(".molen"):
            pointer = read_pointer(full)
            try:
                shown = full.resolve().relative_to(base.resolve()).as_posix()
            except ValueError:
                shown = str(full)
            return pointer.hash, shown.removesuffix(".molen")
    if len(target) >= 8 and all(c in "0123456789abcdef" for c in target):
        return target, target
    raise NotFoundError(
        f"{target}: no such pointer file; name a PATH.molen file, a tracked path, or a data version hash"
    )


def data_lineage(target: str, *, workspace: Workspace | None = None) -> dict[str, Any]:
    """Which runs read or wrote the data version ``target`` names, and which model versions
    those runs produced."""
    workspace = workspace or open_workspace()
    digest, shown = _digest_of(target, workspace)
    store = workspace.metadata
    if len(digest) < 64:
        matches = [d for d in store.referenced_digests() if d.startswith(digest)]
        if len(matches) == 1:
            digest = matches[0]
    run_ids = store.runs_using(digest)
    runs: list[dict[str, Any]] = []
    for run_id in run_ids:
        record = store.get_run(run_id)
        roles = sorted({item.role for item in record.inputs if item.digest == digest})
        runs.append(
            {
                "id": record.id,
                "name": record.name,
                "experiment": record.experiment,
                "status": record.status,
                "roles": roles,
                "start_time": record.start_time,
                "commit": record.tags.get("molen.git.commit"),
            }
        )
    runs.sort(key=lambda run: int(run["start_time"]))
    versions = store.registry.versions_of_runs(run_ids)
    return {
        "data": {"path": shown, "digest": digest},
        "runs": runs,
        "models": [
            {"name": v.name, "version": v.version, "aliases": list(v.aliases), "run_id": v.run_id}
            for v in versions
        ],
    }

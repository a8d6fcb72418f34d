"""What changed between two versions of a model: metrics, params, data, signature, code."""

from __future__ import annotations

from typing import Any

from molen.errors import NotFoundError
from molen.models.package import read_manifest
from molen.registry.service import resolve
from molen.workspace import Workspace, open_workspace

__all__ = ["diff_versions"]


def _side(name: str, version: int, workspace: Workspace) -> dict[str, Any]:
    found = resolve(f"{name}/{version}", workspace=workspace)
    manifest = read_manifest(workspace.objects, found.digest)
    side = {
        "metrics": dict(manifest.get("metrics") or {}),
        "params": dict(manifest.get("params") or {}),
        "data": {item["path"]: item["digest"] for item in manifest.get("data") or []},
        "code": dict(manifest.get("code") or {}),
        "signature": {c["name"]: c for c in (manifest.get("signature") or {}).get("inputs", [])},
        "flavor": f"{manifest['flavor']} ({manifest['serialization']})",
        "libraries": dict(manifest.get("libraries") or {}),
    }
    if found.run_id is not None:
        try:
            record = workspace.metadata.get_run(found.run_id)
        except NotFoundError:
            return side
        side["metrics"] = {k: v for k, v in record.metrics.items() if v == v} or side["metrics"]
        side["params"] = dict(record.params) or side["params"]
        side["data"] = {item.path: item.digest for item in record.inputs} or side["data"]
    return side


def _column_change(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str | None:
    if a is None:
        return f"added ({b['type'] if b else ''})"
    if b is None:
        return "removed"
    changes = []
    if a["type"] != b["type"]:
        changes.append(f"type {a['type']} → {b['type']}")
    if bool(a.get("nullable")) != bool(b.get("nullable")):
        changes.append("now may be missing" if b.get("nullable") else "may no longer be missing")
    old, new = set(a.get("categories") or ()), set(b.get("categories") or ())
    if old != new:
        if new - old:
            changes.append("new categories " + ", ".join(sorted(new - old)[:5]))
        if old - new:
            changes.append("dropped categories " + ", ".join(sorted(old - new)[:5]))
    return "; ".join(changes) or None


def diff_versions(
    name: str, first: int, second: int, *, workspace: Workspace | None = None
) -> dict[str, Any]:
    """Rows of what differs between ``name/first`` and ``name/second`` (unchanged rows too for
    metrics and params, so a table shows both sides)."""
    workspace = workspace or open_workspace()
    a, b = _side(name, first, workspace), _side(name, second, workspace)
    metrics = []
    for key in sorted(set(a["metrics"]) | set(b["metrics"])):
        x, y = a["metrics"].get(key), b["metrics"].get(key)
        metrics.append(
            {"key": key, "a": x, "b": y, "delta": (y - x) if x is not None and y is not None else None}
        )
    params = [
        {"key": key, "a": a["params"].get(key), "b": b["params"].get(key)}
        for key in sorted(set(a["params"]) | set(b["params"]))
    ]
    data = [
        {"path": path, "a": a["data"].get(path), "b": b["data"].get(path)}
        for path in sorted(set(a["data"]) | set(b["data"]))
        if a["data"].get(path) != b["data"].get(path)
    ]
    signature = []
    for column in list(a["signature"]) + [c for c in b["signature"] if c not in a["signature"]]:
        change = _column_change(a["signature"].get(column), b["signature"].get(column))
        if change:
            signature.append({"column": column, "change": change})
    libraries = [
        {"package": key, "a": a["libraries"].get(key), "b": b["libraries"].get(key)}
        for key in sorted(set(a["libraries"]) | set(b["libraries"]))
        if a["libraries"].get(key) != b["libraries"].get(key)
    ]
    return {
        "model": name,
        "a": first,
        "b": second,
        "metrics": metrics,
        "params": params,
        "data": data,
        "signature": signature,
        "code": {"a": a["code"].get("commit"), "b": b["code"].get("commit")},
        "flavor": {"a": a["flavor"], "b": b["flavor"]},
        "libraries": libraries,
    }

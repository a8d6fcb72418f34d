"""The UI's pages that need the project itself, not only the stores: its tracked data through
git history, its pipeline, and the monitoring of its deployed models (the prediction log and
the alert rules are the project's settings).

``molen ui`` runs in a project and sets ``app.state.project_root``; a ``molen server`` started
outside one answers these routes with 404 and a sentence saying where they work.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response

from molen.errors import NotFoundError

if TYPE_CHECKING:
    from molen.workspace import Workspace

__all__ = ["router"]

router = APIRouter(prefix="/api/molen/v1/ui/project", tags=["ui"])


def _workspace(request: Request) -> Workspace:
    root: Path | None = getattr(request.app.state, "project_root", None)
    if root is None:
        raise NotFoundError(
            "this page needs a project: run `molen ui` in the project's folder (molen server "
            "serves the runs and the models, not a project's files)"
        )
    from molen.workspace import open_workspace

    return open_workspace(root)


@router.get("")
def project(request: Request) -> dict[str, Any]:
    """Which project the UI runs in (``null`` under a team's server)."""
    root: Path | None = getattr(request.app.state, "project_root", None)
    return {"name": root.name if root else None, "root": str(root) if root else None}


@router.get("/data")
def data(request: Request) -> dict[str, Any]:
    """Every tracked path, with its version now and the number of runs that used it."""
    from molen.data.tracked import DataSession

    session = DataSession(_workspace(request))
    store = session.workspace.metadata
    try:
        paths = [
            {
                "path": t.path,
                "kind": t.pointer.kind,
                "hash": t.pointer.hash,
                "size": t.pointer.size,
                "files": t.pointer.files,
                "runs": len(store.runs_using(t.pointer.hash)),
            }
            for t in session.tracked()
        ]
    finally:
        session.close()
    return {"paths": sorted(paths, key=lambda p: p["path"])}


@router.get("/data/history")
def data_history(request: Request, path: str) -> dict[str, Any]:
    """The versions of ``path`` through git history, newest first, each with the runs that read
    or wrote it and the model versions those runs registered."""
    from molen.data.history import log
    from molen.data.tracked import DataSession

    session = DataSession(_workspace(request))
    store = session.workspace.metadata
    try:
        assert session.project is not None
        entries = log(session, str(session.project.root / path))  # relative to the project, not to cwd
        versions = []
        for entry in entries:
            runs = [store.get_run(run_id) for run_id in entry.runs]
            models = store.registry.versions_of_runs(entry.runs) if entry.runs else []
            versions.append(
                {
                    "commit": entry.commit,
                    "date": entry.date,
                    "author": entry.author,
                    "subject": entry.subject,
                    "hash": entry.pointer.hash,
                    "size": entry.pointer.size,
                    "files": entry.pointer.files,
                    "runs": [{"id": r.id, "name": r.name, "status": r.status} for r in runs],
                    "models": [
                        {"name": v.name, "version": v.version, "aliases": list(v.aliases)} for v in models
                    ],
                }
            )
    finally:
        session.close()
    return {"path": path, "versions": versions}


@router.get("/pipeline")
def pipeline(request: Request) -> dict[str, Any]:
    """The stages of ``molen.yaml`` in order, each stale or not and why, and the edges the
    files make between them (as ``molen status`` and ``molen dag`` tell)."""
    from molen.config import project_config
    from molen.data.tracked import DataSession
    from molen.pipeline.lock import read_lock
    from molen.pipeline.spec import load_pipeline
    from molen.pipeline.status import param_name, stage_state

    session = DataSession(_workspace(request))
    try:
        assert session.project is not None
        spec = load_pipeline(session.project, project_config(session.project))
        lock = read_lock(session.project.root)
        stale: set[str] = set()
        stages = []
        for name in spec.order():
            stage = spec.stages[name]
            produced = {path for path in stage.deps if path in spec.producer}
            state = stage_state(session, stage, lock.get(name), produced)
            reasons = list(state.reasons) + [
                f"upstream stage {up} is stale" for up in sorted(spec.upstream[name] & stale)
            ]
            if reasons:
                stale.add(name)
            stages.append(
                {
                    "name": name,
                    "cmd": stage.cmd,
                    "deps": list(stage.deps),
                    "outs": list(stage.products),
                    "params": [param_name(p) for p in stage.params],
                    "stale": bool(reasons),
                    "reasons": reasons,
                }
            )
        edges = [[up, name] for name in spec.order() for up in sorted(spec.upstream[name])]
    finally:
        session.close()
    return {"stages": stages, "edges": edges}


@router.get("/monitor")
def monitor(request: Request, model: str, window: str = "1d") -> Response:
    """The monitoring report of ``model`` (``NAME@ALIAS``) over ``window``, as `molen monitor`
    makes it (the project's drift settings and alert rules applied): JSON, or with
    ``format=html`` the report's own page, shown by the UI in a sandboxed frame."""
    import json

    from molen.monitor.report import parse_window, workspace_report

    report = workspace_report(model, _workspace(request), window=parse_window(window, "window"))
    if request.query_params.get("format") == "html":
        from molen.monitor.html import report_html

        return Response(
            report_html(report),
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": "sandbox"},
        )
    return Response(json.dumps(report, default=str), media_type="application/json")

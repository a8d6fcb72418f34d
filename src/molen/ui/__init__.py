"""``molen ui``: the web UI, served by ``molen server`` (at ``/ui/``) or on its own over a
project's store.

A one-page application in ``static/`` (Preact with htm, ECharts, Tabulator; the libraries are
pinned in ``vendor.json`` and fetched by ``scripts/vendor_ui.py``, so users need no Node.js and
the page needs no CDN) reads the page-shaped JSON of :mod:`molen.ui.api`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["STATIC", "mount", "vendored"]

STATIC = Path(__file__).parent / "static"


def vendored() -> bool:
    """Whether the front-end libraries are in place (a wheel has them; a git checkout gets
    them from ``scripts/vendor_ui.py``, which ``scripts/bootstrap.sh`` runs)."""
    vendor = STATIC / "vendor"
    return all((vendor / name).is_file() for name in ("preact-htm.js", "echarts.min.js", "tabulator.min.js"))


def mount(app: FastAPI) -> None:
    """Add the UI's JSON routes, its files at ``/ui/static``, its page at ``/ui/`` and a
    redirect from ``/`` to the FastAPI ``app``."""
    from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
    from fastapi.staticfiles import StaticFiles

    from molen.ui.api import router
    from molen.ui.project import router as project_router

    app.include_router(router)
    app.include_router(project_router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    @app.get("/", include_in_schema=False)
    def home() -> Any:
        return RedirectResponse("/ui/")

    @app.get("/ui", include_in_schema=False)
    @app.get("/ui/", include_in_schema=False)
    def page() -> Any:
        if not vendored():
            return HTMLResponse(
                "<p>molen ui: the front-end libraries are missing from this installation; in a git "
                "checkout, run <code>python scripts/vendor_ui.py</code>.</p>",
                status_code=500,
            )
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

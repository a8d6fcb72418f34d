"""Pictures of an explanation: a waterfall per row, a bar and a beeswarm of global importance,
as PNG (SHAP's own plots on matplotlib) and in one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from molen.errors import MissingDependencyError
from molen.explain.shapley import Explanation

__all__ = ["explanation_html", "render_plots"]

MAX_WATERFALLS = 10


def _shap_explanation(explanation: Explanation) -> Any:
    import numpy as np
    import shap

    shown = explanation.data[explanation.features]
    numbers = np.column_stack(
        [
            shown[name].to_numpy(dtype=float)
            if shown[name].dtype.kind in "biuf"
            else np.full(len(shown), np.nan)
            for name in explanation.features
        ]
    )
    return shap.Explanation(
        values=np.asarray(explanation.values, dtype=float),
        base_values=np.asarray(explanation.base_values, dtype=float),
        data=numbers,
        display_data=shown.astype(str).to_numpy(),
        feature_names=list(explanation.features),
    )


def _png(draw: Any) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt

    plt.close("all")
    with warnings.catch_warnings():  # text features have no numeric colour scale: SHAP warns
        warnings.simplefilter("ignore")
        draw()
    figure = plt.gcf()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def render_plots(explanation: Explanation, *, rows: int = MAX_WATERFALLS) -> dict[str, bytes]:
    """PNG images by file name: ``row-N-waterfall.png`` for the first ``rows`` rows, and
    ``importance-bar.png`` and ``importance-beeswarm.png`` over all explained rows."""
    try:
        import matplotlib  # noqa: F401
        import shap
    except ImportError:
        raise MissingDependencyError(
            "plots need matplotlib and SHAP: pip install 'molen[explain,plots]'"
        ) from None
    values = _shap_explanation(explanation)
    images = {}
    for index in range(min(rows, len(explanation.values))):
        images[f"row-{index}-waterfall.png"] = _png(
            lambda i=index: shap.plots.waterfall(values[i], show=False)
        )
    images["importance-bar.png"] = _png(lambda: shap.plots.bar(values, show=False))
    if len(explanation.values) > 1:
        images["importance-beeswarm.png"] = _png(lambda: shap.plots.beeswarm(values, show=False))
    return images


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:64rem;margin:2rem auto;
padding:0 1rem;color:#1f2328}h1{border-bottom:2px solid #d0d7de}h2{color:#0b5394;margin-top:2rem}
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}.pos{color:#1a7f37}.neg{color:#cf222e}img{max-width:100%}
"""


def explanation_html(explanation: Explanation, *, title: str, images: dict[str, bytes]) -> str:
    """One page: the global plots, then each row's waterfall and its attributions."""

    def image(name: str) -> str:
        data = base64.b64encode(images[name]).decode()
        return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'

    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(explanation.explainer)} explainer; attributions plus the base value equal the "
        f"{html.escape(explanation.output)}.</p>",
        "<h2>What the model leans on (these rows)</h2>",
    ]
    for name in ("importance-bar.png", "importance-beeswarm.png"):
        if name in images:
            parts.append(image(name))
    for index, row in enumerate(explanation.rows()):
        parts.append(f"<h2>Row {index}: {row['base_value']:.4g} → {row['output']:.4g}</h2>")
        waterfall = f"row-{index}-waterfall.png"
        if waterfall in images:
            parts.append(image(waterfall))
        cells = []
        for name, value in sorted(row["attributions"].items(), key=lambda item: -abs(item[1])):
            shown = html.escape(str(explanation.data[name].iloc[index]))
            css = "pos" if value > 0 else "neg"
            cells.append(
                f"<tr><td>{html.escape(name)}</td><td>{shown}</td><td class='{css}'>{value:+.4g}</td></tr>"
            )
        parts.append(
            "<table><tr><th>feature</th><th>value</th><th>attribution</th></tr>" + "".join(cells) + "</table>"
        )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )

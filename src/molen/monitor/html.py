"""The monitoring report as one offline HTML page: verdicts, then reference against current
distributions of every feature (drifted ones first) and of the predictions, as PNG figures
drawn with matplotlib and embedded."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

__all__ = ["report_html"]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:66rem;margin:2rem auto;
padding:0 1rem;color:#1f2328}h1{border-bottom:2px solid #d0d7de}h2{color:#0b5394;margin-top:2rem}
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}
.ok{color:#1a7f37}.warning{color:#9a6700}.alert{color:#cf222e}.charts{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:.4rem}img{max-width:100%}
"""


def _figure(name: str, reference: Any, current: Any, drifted: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(4.2, 2.6))
    if reference.dtype.kind in "iuf" and reference.nunique() > 10:
        both = np.concatenate([reference.to_numpy(dtype=float), current.to_numpy(dtype=float)])
        edges = np.histogram_bin_edges(both[np.isfinite(both)], bins=30).tolist()
        axis.hist(reference, bins=edges, density=True, alpha=0.55, label="reference", color="#4c78a8")
        axis.hist(current, bins=edges, density=True, alpha=0.55, label="current", color="#e45756")
    else:
        levels = sorted(set(reference.astype(str)) | set(current.astype(str)))[:20]
        ref = reference.astype(str).value_counts(normalize=True).reindex(levels, fill_value=0)
        cur = current.astype(str).value_counts(normalize=True).reindex(levels, fill_value=0)
        positions = np.arange(len(levels))
        axis.bar(positions - 0.2, ref.to_numpy(), width=0.4, label="reference", color="#4c78a8")
        axis.bar(positions + 0.2, cur.to_numpy(), width=0.4, label="current", color="#e45756")
        axis.set_xticks(positions, levels, rotation=30, ha="right", fontsize=8)
    axis.set_title(
        f"{name}{' — drifted' if drifted else ''}", fontsize=10, color="#cf222e" if drifted else "#1f2328"
    )
    axis.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>'


def report_html(report: dict[str, Any], frames: dict[str, Any]) -> str:
    """The page for ``report`` (from :func:`molen.monitor.report.monitor`) and its ``frames``."""
    status = report["status"]
    drift = report["data_drift"]
    rows = "".join(
        f"<tr><td>{html.escape(c['column'])}</td><td>{c['kind']}</td><td>{c['method']}</td>"
        f"<td>{c['statistic']:.4g}</td><td>{c['threshold']:g}</td>"
        f"<td class='{'alert' if c['drifted'] else 'ok'}'>{'yes' if c['drifted'] else 'no'}</td>"
        f"<td>{c['psi']:.3f}</td></tr>"
        for c in drift["columns"]
    )
    parts = [
        f"<h1>{html.escape(report['model'])} ({html.escape(report['uri'])}): "
        f"<span class='{status}'>{status.upper()}</span></h1>",
        f"<p>{report['rows']:,} rows from {html.escape(report['window']['since'][:16])} to "
        f"{html.escape(report['window']['until'][:16])} UTC; dataset drift "
        f"{'<b>yes</b>' if drift['dataset_drift'] else 'no'} ({drift['drifted_share']:.0%} of features).</p>",
        "<h2>Drift per feature</h2><table><tr><th>feature</th><th>type</th><th>method</th><th>statistic</th>"
        f"<th>threshold</th><th>drift</th><th>PSI</th></tr>{rows}</table>",
    ]
    if report["quality"]:
        items = "".join(
            f"<li>{html.escape(q['column'])}: {html.escape(q['check'])} in {q['share']:.1%} of rows "
            f"{html.escape(q['detail'])}</li>"
            for q in report["quality"]
        )
        parts.append(f"<h2>Data quality</h2><ul>{items}</ul>")
    volume, performance = report["volume"], report["performance"]
    parts.append(
        f"<h2>Volume and performance</h2><p>{volume['rows']:,} rows; "
        f"versions {', '.join(volume['versions'])}; "
        f"latency p50 {volume['latency_ms_p50']:.2f} ms, p95 {volume['latency_ms_p95']:.2f} ms.</p>"
    )
    if performance["feedback_rows"]:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in performance["metrics"].items())
        parts.append(
            f"<p>On {performance['feedback_rows']:,} rows with feedback "
            f"({performance['coverage']:.0%}): {shown}.</p>"
        )
    else:
        parts.append("<p>No feedback yet for this window.</p>")
    ordered = sorted(drift["columns"], key=lambda c: (not c["drifted"], c["column"]))
    charts = [
        _figure(
            c["column"],
            frames["reference"][c["column"]].dropna(),
            frames["current"][c["column"]].dropna(),
            c["drifted"],
        )
        for c in ordered
    ]
    if "reference_prediction" in frames:
        drifted = bool(report.get("prediction_drift", {}).get("dataset_drift"))
        charts.insert(
            0, _figure("prediction", frames["reference_prediction"], frames["current_prediction"], drifted)
        )
    parts.append(
        "<h2>Reference and current distributions</h2><div class='charts'>" + "".join(charts) + "</div>"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>molen monitor: {html.escape(report['model'])}</title>"
        f"<style>{_STYLE}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )

"""Drift and monitoring reports as single offline HTML pages: verdict tables, reference against
current distributions (the shares per bin every verdict was computed on) and, for a monitoring
report, drift, performance and volume over time. Figures are matplotlib PNGs embedded as data
URLs, so a page opens with no network and no script."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from molen.monitor.drift import DriftReport

__all__ = ["drift_html", "report_html"]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:70rem;margin:2rem auto;
padding:0 1rem;color:#1f2328}h1{border-bottom:2px solid #d0d7de}h2{color:#0b5394;margin-top:2rem}
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}
.ok{color:#1a7f37}.warning{color:#9a6700}.alert{color:#cf222e}.charts{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:.4rem}img{max-width:100%}
.note{color:#59636e;font-size:.9rem}
"""
_REFERENCE, _CURRENT, _ESTIMATE = "#4c78a8", "#e45756", "#9467bd"


def _png(figure: Any, alt: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(column: dict[str, Any]) -> str:
    """Reference and current shares per bin of one column."""
    import numpy as np

    plt = _pyplot()
    labels = list(column["labels"])
    keep = [
        i
        for i, (r, c) in enumerate(zip(column["reference_share"], column["current_share"], strict=True))
        if r or c
    ]
    keep = sorted(keep, key=lambda i: -(column["reference_share"][i] + column["current_share"][i]))[:20]
    keep.sort()
    positions = np.arange(len(keep))
    figure, axis = plt.subplots(figsize=(4.4, 2.7))
    axis.bar(
        positions - 0.2,
        [column["reference_share"][i] for i in keep],
        0.4,
        label="reference",
        color=_REFERENCE,
    )
    axis.bar(
        positions + 0.2, [column["current_share"][i] for i in keep], 0.4, label="current", color=_CURRENT
    )
    axis.set_xticks(positions, [labels[i] for i in keep], rotation=35, ha="right", fontsize=7)
    axis.set_ylabel("share of rows", fontsize=8)
    drifted = column["drifted"]
    axis.set_title(
        f"{column['column']}{' — drifted' if drifted else ''}\n{column['method']} {column['statistic']:.3g}",
        fontsize=9,
        color="#cf222e" if drifted else "#1f2328",
    )
    axis.legend(fontsize=7)
    return _png(figure, column["column"])


def _over_time(
    title: str,
    times: list[datetime],
    lines: dict[str, list[float | None]],
    *,
    ylabel: str,
    limit: float | None = None,
) -> str:
    """One line per series over the report's buckets (a dashed line for estimates)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.6, 2.8))
    for name, values in lines.items():
        points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
        if not points:
            continue
        style = "--" if name.startswith("estimated") else "-"
        axis.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", markersize=3, label=name)
    if limit is not None:
        axis.axhline(limit, color="#cf222e", linewidth=0.8, linestyle=":", label="threshold")
    axis.set_title(title, fontsize=10)
    axis.set_ylabel(ylabel, fontsize=8)
    axis.tick_params(labelsize=7)
    figure.autofmt_xdate()
    axis.legend(fontsize=7, ncol=3)
    return _png(figure, title)


def _performance_chart(times: list[datetime], timeline: list[dict[str, Any]], names: list[str]) -> str:
    """Realized metrics (solid) and estimated ones (dashed, same colour) over the feedback
    coverage (grey bars, right axis)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.6, 2.8))
    share = axis.twinx()
    width = (times[1] - times[0]) * 0.6
    share.bar(
        times, [entry["coverage"] for entry in timeline], width=width, color="#d0d7de", label="feedback"
    )
    share.set_ylim(0, 1.05)
    share.set_ylabel("rows with feedback", fontsize=8, color="#59636e")
    axis.set_zorder(share.get_zorder() + 1)
    axis.patch.set_visible(False)
    colours = ["#4c78a8", "#f58518", "#54a24b"]
    for colour, name in zip(colours, names, strict=False):
        for key, style, label in (("metrics", "-", name), ("estimated", "--", f"{name} (estimated)")):
            points = [(t, e[key][name]) for t, e in zip(times, timeline, strict=True) if name in e[key]]
            if points:
                axis.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    color=colour,
                    marker="o",
                    markersize=3,
                    label=label,
                )
    axis.set_title("performance over time: realized (solid), estimated from confidence (dashed)", fontsize=9)
    axis.tick_params(labelsize=7)
    share.tick_params(labelsize=7)
    figure.autofmt_xdate()
    axis.legend(fontsize=7, ncol=3, loc="lower left")
    return _png(figure, "performance over time")


def _volume_chart(times: list[datetime], timeline: list[dict[str, Any]]) -> str:
    """Rows per period (bars) and latency p50/p95 (lines, right axis)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.6, 2.8))
    width = (times[1] - times[0]) * 0.6
    axis.bar(times, [entry["rows"] for entry in timeline], width=width, color="#9ecae9", label="rows")
    axis.set_ylabel("rows", fontsize=8)
    latency = axis.twinx()
    for key, style in (("latency_ms_p50", "-"), ("latency_ms_p95", "--")):
        latency.plot(
            times,
            [entry[key] for entry in timeline],
            style,
            color="#e45756",
            marker="o",
            markersize=3,
            label=key.removeprefix("latency_ms_"),
        )
    latency.set_ylabel("latency ms", fontsize=8, color="#e45756")
    latency.set_ylim(bottom=0)
    axis.set_title("rows and latency", fontsize=10)
    axis.tick_params(labelsize=7)
    latency.tick_params(labelsize=7)
    figure.autofmt_xdate()
    latency.legend(fontsize=7, loc="upper right")
    return _png(figure, "rows and latency")


def _page(title: str, parts: list[str]) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _drift_table(drift: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c['column'])}</td><td>{c['kind']}</td><td>{c['method']}</td>"
        f"<td>{c['statistic']:.4g}</td><td>{c['threshold']:g}</td>"
        f"<td class='{'alert' if c['drifted'] else 'ok'}'>{'yes' if c['drifted'] else 'no'}</td>"
        f"<td>{c['psi']:.3f}</td><td>{c['current_rows']:,}</td></tr>"
        for c in drift["columns"]
    )
    return (
        "<table><tr><th>feature</th><th>type</th><th>method</th><th>statistic</th><th>threshold</th>"
        f"<th>drift</th><th>PSI</th><th>rows</th></tr>{rows}</table>"
    )


def drift_html(report: DriftReport) -> str:
    """The page of a :class:`~molen.monitor.drift.DriftReport` (``molen.drift_report(...).html()``)."""
    drift = report.to_dict()
    verdict = "<b>yes</b>" if drift["dataset_drift"] else "no"
    charts = [_bars(c) for c in drift["columns"] if c["drifted"] and c["labels"]]
    parts = [
        f"<h1>Data drift: <span class='{'alert' if report.dataset_drift else 'ok'}'>"
        f"{'DRIFT' if report.dataset_drift else 'NO DRIFT'}</span></h1>",
        f"<p>Preset {drift['preset']}; dataset drift {verdict} ({drift['drifted_share']:.0%} of columns, "
        f"threshold {drift['drift_share']:.0%}).</p>",
        _drift_table(drift),
    ]
    if charts:
        parts.append("<h2>Drifted columns</h2><div class='charts'>" + "".join(charts) + "</div>")
    return _page("molen drift report", parts)


def _timeline_charts(report: dict[str, Any]) -> list[str]:
    timeline = report.get("timeline") or []
    if len(timeline) < 2:
        return []
    times = [datetime.fromisoformat(entry["start"]) for entry in timeline]
    drifted = sorted(
        (c for c in report["data_drift"]["columns"]), key=lambda c: (not c["drifted"], -c["psi"])
    )[:6]
    charts = [
        _over_time(
            "share of drifted features",
            times,
            {"drifted share": [entry["drifted_share"] for entry in timeline]},
            ylabel="share",
            limit=report["data_drift"]["drift_share"],
        ),
        _over_time(
            "drift per feature (PSI)",
            times,
            {
                c["column"]: [entry["drift"].get(c["column"], {}).get("psi") for entry in timeline]
                for c in drifted
            },
            ylabel="PSI",
        ),
    ]
    names = {name for entry in timeline for name in (*entry["metrics"], *entry["estimated"])}
    shown = [name for name in ("accuracy", "f1", "roc_auc", "mae", "rmse", "r2") if name in names][:3]
    if shown:
        charts.append(_performance_chart(times, timeline, shown))
    charts.append(_volume_chart(times, timeline))
    return charts


def _versions_table(versions: list[dict[str, Any]]) -> str:
    """Each (version, role) that answered in the window, side by side."""

    def share(value: float | None) -> str:
        return "–" if value is None else f"{value:.1%}"

    rows = "".join(
        f"<tr><td>{html.escape(v['version'])}</td><td>{html.escape(v['role'])}</td><td>{v['rows']:,}</td>"
        f"<td>{v['latency_ms_p50']:.2f} / {v['latency_ms_p95']:.2f}</td><td>{v['with_feedback']:,}</td>"
        f"<td>{share(v['accuracy']) if v['mae'] is None else format(v['mae'], '.4g')}</td>"
        f"<td>{share(v['agreement'])}" + (f" of {v['compared']:,}" if v["compared"] else "") + "</td></tr>"
        for v in versions
    )
    return (
        "<table><tr><th>version</th><th>role</th><th>rows</th><th>latency p50 / p95 ms</th>"
        "<th>with feedback</th><th>accuracy (MAE)</th><th>agrees with the champion</th></tr>"
        f"{rows}</table>"
    )


def report_html(report: dict[str, Any]) -> str:
    """The page of a monitoring report (from :func:`molen.monitor.report.monitor`)."""
    status = report["status"]
    drift = report["data_drift"]
    reference = report.get("reference", {})
    against = "the training profile"
    if reference.get("source") == "log":
        start = str(reference.get("since") or "the start")[:16]
        against = f"the log from {html.escape(start)} to {html.escape(reference['until'][:16])}"
    parts = [
        f"<h1>{html.escape(report['model'])} ({html.escape(report['uri'])}): "
        f"<span class='{status}'>{status.upper()}</span></h1>",
        f"<p>{report['rows']:,} rows from {html.escape(report['window']['since'][:16])} to "
        f"{html.escape(report['window']['until'][:16])} UTC against {against}; dataset drift "
        f"{'<b>yes</b>' if drift['dataset_drift'] else 'no'} ({drift['drifted_share']:.0%} of features, "
        f"preset {drift['preset']}).</p>",
    ]
    if report.get("alerts"):
        items = "".join(
            f"<li>{html.escape(a['rule'])} (value {a['value']:.4g})</li>" for a in report["alerts"]
        )
        parts.append(f"<h2>Alerts</h2><ul class='alert'>{items}</ul>")
    parts += ["<h2>Drift per feature</h2>", _drift_table(drift)]
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
            f"<p>Realized on {performance['feedback_rows']:,} rows with feedback "
            f"({performance['coverage']:.0%}): {shown}.</p>"
        )
    else:
        parts.append("<p>No feedback yet for this window.</p>")
    if performance.get("estimated"):
        shown = ", ".join(f"{k} {v:.3f}" for k, v in performance["estimated"].items())
        parts.append(
            f"<p>Estimated from the model's confidence, for all {report['rows']:,} rows: {shown}. "
            "<span class='note'>An estimate, calibrated on the reference data; it assumes the relation "
            "between confidence and correctness still holds.</span></p>"
        )
    if "estimate_check" in performance:
        check = performance["estimate_check"]
        shown = ", ".join(f"{k} {v:.3f}" for k, v in check["mean_absolute_error"].items())
        parts.append(
            f"<p>Estimate against realized, over {check['buckets']} periods with feedback: "
            f"mean absolute error {shown}.</p>"
        )
    versions = report.get("versions") or []
    if len(versions) > 1:
        parts.append("<h2>Champion and challengers</h2>" + _versions_table(versions))
    timeline = _timeline_charts(report)
    if timeline:
        parts.append("<h2>Over time</h2><div class='charts'>" + "".join(timeline) + "</div>")
    ordered = sorted(drift["columns"], key=lambda c: (not c["drifted"], c["column"]))
    charts = [_bars(c) for c in ordered if c["labels"]]
    if report.get("prediction_drift"):
        charts.insert(0, _bars(report["prediction_drift"]["columns"][0]))
    parts.append(
        "<h2>Reference and current distributions</h2><div class='charts'>" + "".join(charts) + "</div>"
    )
    return _page(f"molen monitor: {report['model']}", parts)

"""The model card: what a model is for, how good it is, what made it, what it takes.

Rendered from a model package's manifest (and, once registered, its version and aliases) as
Markdown, and as a self-contained HTML page (no external CSS or scripts).
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["card_html", "card_markdown"]


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    if not rows:
        return ["_none recorded_", ""]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return [*lines, ""]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _profile_rows(profile: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for name, stats in (profile.get("features") or {}).items():
        missing = f"{stats['missing'] / stats['count']:.1%}" if stats.get("count") else "—"
        if stats.get("kind") == "numeric" and "mean" in stats:
            summary = (
                f"mean {_format(stats['mean'])}, range {_format(stats['min'])} – {_format(stats['max'])}"
            )
        elif stats.get("kind") == "categorical":
            top = ", ".join(f"{item['value']} ({item['count']})" for item in stats.get("top", [])[:4])
            summary = f"{stats.get('distinct', 0)} values; most frequent: {top}"
        else:
            summary = f"{stats.get('min', '')} – {stats.get('max', '')}"
        rows.append((name, missing, summary))
    return rows


def card_markdown(
    manifest: dict[str, Any],
    *,
    version: int | None = None,
    aliases: tuple[str, ...] = (),
    profile: dict[str, Any] | None = None,
) -> str:
    """The model card of ``manifest`` as Markdown."""
    name = manifest.get("name") or "model"
    title = f"{name} / version {version}" if version is not None else name
    run = manifest.get("run") or {}
    lines = [f"# Model card: {title}", ""]
    lines += [manifest.get("description") or "_No description given (log_model(description=…))._", ""]
    facts = [
        ("flavor", f"{manifest['flavor']} ({manifest['serialization']})"),
        ("task", manifest.get("task") or "unknown"),
        ("logged", manifest.get("created") or ""),
        ("run", f"{run.get('id', '')} ({run.get('experiment', '')} / {run.get('name', '')})"),
        ("package digest", manifest.get("digest", "(this package)")),
    ]
    if aliases:
        facts.append(("aliases", ", ".join(f"@{alias}" for alias in aliases)))
    if manifest.get("classes") is not None:
        facts.append(("classes", ", ".join(str(c) for c in manifest["classes"])))
    lines += ["## Summary", "", *_table(("property", "value"), facts)]
    metrics = sorted((manifest.get("metrics") or {}).items())
    lines += ["## Metrics", "", *_table(("metric", "value"), [(k, _format(v)) for k, v in metrics])]
    params = sorted((manifest.get("params") or {}).items())
    lines += ["## Parameters", "", *_table(("param", "value"), params)]
    data = manifest.get("data") or []
    lines += [
        "## Data versions",
        "",
        *_table(
            ("path", "role", "kind", "version"),
            [(d["path"], d["role"], d["kind"], d["digest"][:12]) for d in data],
        ),
    ]
    code = manifest.get("code") or {}
    environment = manifest.get("libraries") or {}
    lineage: list[tuple[Any, ...]] = [("commit", code.get("commit", "not in a git repository"))]
    if code.get("commit"):
        lineage += [("branch", code.get("branch", "")), ("uncommitted changes", code.get("dirty", ""))]
    lineage += sorted(environment.items())
    lines += ["## Lineage", "", *_table(("what", "version"), lineage)]
    signature = manifest.get("signature") or {}
    rows = []
    for column in signature.get("inputs", []):
        notes = []
        if column.get("nullable"):
            notes.append("may be missing")
        if column.get("categories") is not None:
            values = column["categories"]
            notes.append("one of " + ", ".join(values[:8]) + (" …" if len(values) > 8 else ""))
        rows.append((column["name"], column["type"], "; ".join(notes)))
    output = signature.get("output") or {}
    lines += ["## Signature", "", *_table(("input column", "type", "notes"), rows)]
    classes = output.get("classes")
    shown = (
        f"a class label, one of {', '.join(map(str, classes))}" if classes else output.get("type", "unknown")
    )
    lines += [f"Output: {shown}", ""]
    if profile:
        lines += [
            "## Training data",
            "",
            f"{profile.get('rows', 0):,} rows (the reference profile monitoring compares live traffic with).",
            "",
            *_table(("feature", "missing", "distribution"), _profile_rows(profile)),
        ]
    importance = manifest.get("importance") or {}
    if importance:
        top = sorted(importance.items(), key=lambda item: -abs(item[1]))[:15]
        lines += [
            "## Global feature importance",
            "",
            *_table(("feature", "mean |SHAP|"), [(k, _format(v)) for k, v in top]),
        ]
    return "\n".join(lines)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;color:#1f2328;line-height:1.45}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3rem}h2{margin-top:2rem;color:#0b5394}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d0d7de;padding:.3rem .7rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}tr:nth-child(even) td{background:#fbfbfc}
code{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px}
.charts{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0;padding:.5rem;border:1px solid #d0d7de;
border-radius:6px}figcaption{font-size:.85rem;font-weight:600;margin-bottom:.3rem}
"""


def _bars(values: list[float], labels: list[str]) -> str:
    """A small bar chart as inline SVG (no script, no external file)."""
    width, height, top = 260, 90, max(values) or 1.0
    step = width / max(len(values), 1)
    bars = []
    for index, (value, label) in enumerate(zip(values, labels, strict=True)):
        bar = (height - 14) * value / top
        bars.append(
            f'<rect x="{index * step + 1:.1f}" y="{height - 14 - bar:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{bar:.1f}" fill="#4c78a8"><title>{html.escape(label)}: {value:g}</title></rect>'
        )
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
        + "".join(bars)
        + f'<text x="0" y="{height - 2}" font-size="10" fill="#57606a">{html.escape(labels[0])}</text>'
        + f'<text x="{width}" y="{height - 2}" font-size="10" fill="#57606a" text-anchor="end">'
        + f"{html.escape(labels[-1])}</text></svg>"
    )


def _distributions(profile: dict[str, Any]) -> str:
    figures = []
    columns = list((profile.get("features") or {}).items())
    for extra in ("target", "prediction"):
        if profile.get(extra):
            columns.append((f"({extra})", profile[extra]))
    for name, stats in columns:
        histogram = stats.get("histogram")
        if histogram:
            edges = histogram["edges"]
            labels = [f"{edges[i]:.4g} – {edges[i + 1]:.4g}" for i in range(len(histogram["counts"]))]
            chart = _bars([float(c) for c in histogram["counts"]], labels)
        elif stats.get("top"):
            top = stats["top"][:12]
            chart = _bars([float(item["count"]) for item in top], [str(item["value"]) for item in top])
        else:
            continue
        figures.append(f"<figure><figcaption>{html.escape(name)}</figcaption>{chart}</figure>")
    if not figures:
        return ""
    return '<h2>Distributions in the training data</h2>\n<div class="charts">' + "".join(figures) + "</div>\n"


def card_html(markdown: str, *, title: str, profile: dict[str, Any] | None = None) -> str:
    """The Markdown card as one self-contained HTML page (with the profile's distributions
    drawn as inline SVG bar charts when given)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    if profile:
        body += _distributions(profile)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}</body></html>\n"
    )

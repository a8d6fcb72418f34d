"""How runs look in the terminal: the runs table, one run's detail, a comparison."""

from __future__ import annotations

from typing import Any

from molen.cli.render import (
    console,
    format_duration,
    format_time,
    format_value,
    print_csv,
    print_json,
)
from molen.entities import RunRecord
from molen.tracking.compare import RunComparison

__all__ = ["comparison", "run_detail", "runs_table"]

_STATUS_STYLE = {"FINISHED": "green", "RUNNING": "cyan", "FAILED": "red", "KILLED": "yellow"}
_MAX_KEYS = 8


def _keys(records: list[RunRecord], attribute: str) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        for key in getattr(record, attribute):
            seen.setdefault(key, None)
    return sorted(seen)


def runs_table(records: list[RunRecord], format: str, *, truncated: bool, limit: int) -> None:
    """Print runs as a table, JSON or CSV."""
    if format == "json":
        print_json([record.to_dict() for record in records])
        return
    params, metrics = _keys(records, "params"), _keys(records, "metrics")
    if format == "csv":
        header = ["run_id", "name", "experiment", "status", "start_time", "duration_ms", "commit"]
        header += [f"params.{k}" for k in params] + [f"metrics.{k}" for k in metrics]
        rows = [
            [
                r.id,
                r.name,
                r.experiment,
                r.status,
                format_time(r.start_time),
                r.duration_ms,
                r.tags.get("molen.git.commit", ""),
                *(r.params.get(k, "") for k in params),
                *(format_value(r.metrics.get(k)) for k in metrics),
            ]
            for r in records
        ]
        print_csv(header, rows)
        return
    from rich.table import Table

    shown_params, shown_metrics = params[:_MAX_KEYS], metrics[:_MAX_KEYS]
    several_experiments = len({r.experiment for r in records}) > 1
    table = Table(header_style="bold", pad_edge=False, box=None)
    table.add_column("run", no_wrap=True, style="bold")
    table.add_column("name", no_wrap=True, max_width=24)
    if several_experiments:
        table.add_column("experiment", no_wrap=True, max_width=20)
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("commit", no_wrap=True)
    for key in shown_params:
        table.add_column(f"[blue]{key}[/]", justify="right", no_wrap=True)
    for key in shown_metrics:
        table.add_column(f"[magenta]{key}[/]", justify="right", no_wrap=True)
    for r in records:
        style = _STATUS_STYLE.get(r.status, "")
        commit = r.tags.get("molen.git.commit", "")[:7]
        if r.tags.get("molen.git.dirty") == "true":
            commit += "*"
        table.add_row(
            r.id[:8],
            r.name,
            *([r.experiment] if several_experiments else []),
            f"[{style}]{r.status}[/]",
            format_time(r.start_time)[5:16],
            format_duration(r.duration_ms),
            commit,
            *(r.params.get(k, "") for k in shown_params),
            *(format_value(r.metrics.get(k)) for k in shown_metrics),
        )
    out = console()
    if not records:
        out.print("No runs match.")
        return
    out.print(table)
    notes = ["[blue]params[/] and [magenta]metrics[/] by name"]
    if truncated:
        notes.append(f"showing the first {limit} runs; use --limit for more")
    hidden = max(0, len(params) - _MAX_KEYS) + max(0, len(metrics) - _MAX_KEYS)
    if hidden:
        notes.append(f"{hidden} more param/metric columns: use --format csv or json")
    if notes:
        out.print("[dim]" + "; ".join(notes) + "[/]")


def run_detail(record: RunRecord, format: str) -> None:
    """Print everything about one run."""
    if format == "json":
        print_json(record.to_dict())
        return
    from rich.table import Table

    out = console()
    style = _STATUS_STYLE.get(record.status, "")
    out.print(f"[bold]run {record.id}[/]  {record.name}  [{style}]{record.status}[/]")
    info = Table.grid(padding=(0, 2))
    info.add_row("experiment", record.experiment)
    info.add_row("started", format_time(record.start_time))
    info.add_row("ended", format_time(record.end_time))
    info.add_row("took", format_duration(record.duration_ms))
    if record.parent_id:
        info.add_row("parent", record.parent_id)
    info.add_row("user@host", f"{record.user or ''}@{record.host or ''}")
    commit = record.tags.get("molen.git.commit")
    if commit:
        dirty = " (uncommitted changes)" if record.tags.get("molen.git.dirty") == "true" else ""
        info.add_row("commit", f"{commit} on {record.tags.get('molen.git.branch', '?')}{dirty}")
    info.add_row("command", record.tags.get("molen.command", ""))
    out.print(info)
    _section(out, "params", [(k, v) for k, v in sorted(record.params.items())])
    _section(out, "metrics (latest)", [(k, format_value(v)) for k, v in sorted(record.metrics.items())])
    user_tags = [(k, v) for k, v in sorted(record.tags.items()) if not k.startswith("molen.")]
    _section(out, "tags", user_tags)
    _section(
        out,
        "data",
        [(i.path, f"{i.role} {i.kind} {i.digest[:12]} {i.size:,} bytes") for i in record.inputs],
    )
    _section(out, "artifacts", [(a.path, f"{a.digest[:12]} {a.size:,} bytes") for a in record.artifacts])


def _section(out: Any, title: str, rows: list[tuple[str, str]]) -> None:
    if not rows:
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False, title_style="bold")
    table.add_column(style="cyan")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


def comparison(result: RunComparison, format: str, *, only_changed: bool) -> None:
    """Print runs side by side; differing rows marked, the best metric value green."""
    rows = [row for row in result.rows if row.differs or not only_changed]
    if format == "json":
        print_json(
            {
                "runs": [r.id for r in result.runs],
                "rows": [
                    {
                        "field": row.field,
                        "values": [format_value(v) if isinstance(v, float) else v for v in row.values],
                        "differs": row.differs,
                        "best": None if row.best is None else result.runs[row.best].id,
                    }
                    for row in rows
                ],
            }
        )
        return
    from rich.table import Table

    table = Table(header_style="bold")
    table.add_column("")
    for run in result.runs:
        table.add_column(f"{run.id[:8]}\n{run.name}", justify="right")
    for row in rows:
        cells = []
        for index, value in enumerate(row.values):
            text = format_value(value)
            if row.best == index:
                text = f"[bold green]{text}[/]"
            cells.append(text)
        label = f"[yellow]{row.field}[/]" if row.differs else f"[dim]{row.field}[/]"
        table.add_row(label, *cells)
    console().print(table)
    console().print("[dim]yellow: values differ; green: the best value of a metric[/]")


def experiments_table(records: list[RunRecord], format: str, *, only_changed: bool) -> None:
    """The pipeline's runs: which params they changed, every param and metric (``only_changed``:
    only the columns whose values differ between rows)."""
    params, metrics = _keys(records, "params"), _keys(records, "metrics")
    if only_changed:
        params = [k for k in params if len({r.params.get(k) for r in records}) > 1]
        metrics = [k for k in metrics if len({r.metrics.get(k) for r in records}) > 1]
    if format == "json":
        print_json(
            [
                {
                    "run_id": r.id,
                    "name": r.name,
                    "status": r.status,
                    "overrides": r.tags.get("molen.exp.overrides", ""),
                    "params": {k: r.params[k] for k in params if k in r.params},
                    "metrics": {k: r.metrics[k] for k in metrics if k in r.metrics},
                }
                for r in records
            ]
        )
        return
    from rich.table import Table

    # narrow enough for an 80-column terminal: short ids, compact numbers, status only when
    # some run did not finish
    show_status = any(r.status != "FINISHED" for r in records)
    table = Table(header_style="bold", pad_edge=False, box=None)
    table.add_column("run", no_wrap=True, style="bold")
    if show_status:
        table.add_column("status", no_wrap=True)
    table.add_column("changed", overflow="fold")
    for key in params[:_MAX_KEYS]:
        table.add_column(f"[blue]{key}[/]", justify="right", overflow="fold")
    for key in metrics[:_MAX_KEYS]:
        table.add_column(f"[magenta]{key}[/]", justify="right", overflow="fold")
    for r in records:
        table.add_row(
            r.id[:7],
            *([r.status] if show_status else []),
            r.tags.get("molen.exp.overrides", "") or "[dim]workspace[/]",
            *(str(r.params.get(k, "")) for k in params[:_MAX_KEYS]),
            *(_compact(r.metrics.get(k)) for k in metrics[:_MAX_KEYS]),
        )
    console().print(
        table if records else "no pipeline runs yet: `molen repro` or `molen exp run -S KEY=VALUE`"
    )


def _compact(value: float | None) -> str:
    """A metric in at most four significant digits (a table cell, not a record)."""
    if value is None:
        return ""
    return f"{value:.4g}"

"""``molen monitor``: drift, data quality, volume and performance of a served model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from molen.cli.app import ReportFormat, app, open_workspace_of


class Baseline(str, Enum):
    """What the window is compared with."""

    training = "training"
    log = "log"


class Preset(str, Enum):
    """The drift decision table (molen.monitor.drift)."""

    molen = "molen"
    evidently = "evidently"


@app.command()
def monitor(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION (its reference is the baseline).")],
    window: Annotated[str, typer.Option(help="How far back from --until: 30m, 12h, 1d, 2w.")] = "1d",
    since: Annotated[
        str | None, typer.Option(help="Start of the window: 2026-11-20, 2026-11-20T08:00 or 7d (ago).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="End of the window (default: now).")] = None,
    every: Annotated[
        str | None, typer.Option(help="Timeline step: 1h, 1d… (default: a day from 2 days on, else an hour).")
    ] = None,
    reference: Annotated[
        Baseline, typer.Option(help="Baseline: the profile stored with the model, or a window of the log.")
    ] = Baseline.training,
    reference_since: Annotated[
        str | None, typer.Option(help="Baseline from the log, starting here (implies --reference log).")
    ] = None,
    reference_until: Annotated[
        str | None, typer.Option(help="Baseline from the log, ending here (default: the window's start).")
    ] = None,
    preset: Annotated[
        Preset | None, typer.Option(help="Drift decision table (default: molen.yaml's, else molen).")
    ] = None,
    drift_share: Annotated[
        float | None,
        typer.Option(help="Share of drifted features that makes the dataset drift (default 0.5)."),
    ] = None,
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Rows answered by every version, not only this one.")
    ] = False,
    format: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the JSON or HTML report here.")
    ] = None,
    on_alert: Annotated[
        str | None,
        typer.Option("--on-alert", help="A shell command to run when the status is alert (e.g. retrain)."),
    ] = None,
) -> None:
    """Is it still working? Drift of inputs and predictions, quality, volume, performance from
    feedback and estimated from confidence, over the window and over time.

    Only the rows the named version answered count (--all-versions: every version's). Exit code:
    0 ok, 1 warning (a feature or the predictions drifted, or a quality check failed), 2 alert (the
    dataset drifted, or an alert rule of molen.yaml fired), so cron and CI can act on it.
    """
    import dataclasses

    from molen.cli.render import console, print_json, status
    from molen.errors import InvalidValueError
    from molen.monitor.alerts import act_on_alert
    from molen.monitor.report import STATUS_CODES, drift_config_of, parse_time, parse_window, workspace_report

    workspace = open_workspace_of(ctx)
    config = drift_config_of(workspace)
    if preset is not None:
        config = dataclasses.replace(config, preset=preset.value, thresholds={})
    if drift_share is not None:
        config = dataclasses.replace(config, drift_share=drift_share)
    window_end = parse_time(until, "--until") if until else None
    window_start = parse_time(since, "--since") if since else None
    baseline_start = parse_time(reference_since, "--reference-since") if reference_since else None
    baseline_end = parse_time(reference_until, "--reference-until") if reference_until else None
    if reference is Baseline.log and baseline_start is None and baseline_end is None:
        raise InvalidValueError("--reference log needs --reference-since (and optionally --reference-until)")
    with status(f"monitoring {model}") as step:
        report = workspace_report(
            model,
            workspace,
            drift=config,
            window=parse_window(window),
            since=window_start,
            until=window_end,
            every=parse_window(every, "--every") if every else None,
            reference_since=baseline_start,
            reference_until=baseline_end,
            all_versions=all_versions,
            progress=step,
        )
    if output is not None and format is ReportFormat.table:  # -o report.html: the name says the format
        format = ReportFormat.html if output.suffix.lower() in {".html", ".htm"} else ReportFormat.json
    if output is not None and format is not ReportFormat.table:
        _write(report, format, output)
        act_on_alert(report, workspace, report_path=output, on_alert=on_alert)
        if on_alert and report["status"] == "alert":
            _write(report, format, output)  # again, with the command's exit code
        console().print(f"{report['status'].upper()}: wrote {output}")
        raise typer.Exit(STATUS_CODES[report["status"]])
    act_on_alert(report, workspace, report_path=output, on_alert=on_alert)
    if format is ReportFormat.json:
        print_json(report)
        raise typer.Exit(STATUS_CODES[report["status"]])
    if format is ReportFormat.html:
        from molen.monitor.html import report_html

        typer.echo(report_html(report))
        raise typer.Exit(STATUS_CODES[report["status"]])
    from rich.table import Table

    out = console()
    colour = {"ok": "green", "warning": "yellow", "alert": "red"}[report["status"]]
    window_text = f"{report['window']['since'][:16]} to {report['window']['until'][:16]}"
    out.print(
        f"[bold]{report['model']}[/] ({model}) · {report['rows']:,} rows from {window_text} "
        f"· [{colour}]{report['status'].upper()}[/]"
    )
    table = Table(box=None, header_style="bold")
    for column in ("feature", "type", "method", "statistic", "threshold", "drift", "PSI"):
        table.add_column(column)
    for row in report["data_drift"]["columns"]:
        table.add_row(
            row["column"],
            row["kind"],
            row["method"],
            f"{row['statistic']:.4g}",
            f"{row['threshold']:g}",
            "[red]yes[/]" if row["drifted"] else "no",
            f"{row['psi']:.3f}",
        )
    out.print(table)
    drift = report["data_drift"]
    verdict = "[red]yes[/]" if drift["dataset_drift"] else "no"
    out.print(f"dataset drift: {verdict} ({drift['drifted_share']:.0%} of features)")
    if "prediction_drift" in report:
        column = report["prediction_drift"]["columns"][0]
        verdict = "[red]yes[/]" if column["drifted"] else "no"
        out.print(f"prediction drift: {verdict} ({column['method']} {column['statistic']:.4g})")
    for check in report["quality"]:
        share = f"{check['share']:.1%}"
        out.print(
            f"[yellow]quality[/] {check['column']}: {check['check']} in {share} of rows"
            + (f" ({check['detail']})" if check["detail"] else "")
        )
    volume = report["volume"]
    out.print(
        f"volume: {volume['rows']:,} rows, versions {', '.join(volume['versions'])}; "
        f"latency p50 {volume['latency_ms_p50']:.2f} ms, p95 {volume['latency_ms_p95']:.2f} ms"
    )
    performance = report["performance"]
    if performance["feedback_rows"]:
        shown = "  ".join(f"{k}={v:.3f}" for k, v in performance["metrics"].items())
        covered = f"{performance['feedback_rows']:,} rows with feedback ({performance['coverage']:.0%})"
        out.print(f"performance on {covered}: {shown}")
    else:
        out.print("performance: no feedback yet for this window")
    if performance.get("estimated"):
        shown = "  ".join(f"{k}={v:.3f}" for k, v in performance["estimated"].items())
        out.print(f"estimated from confidence (all rows, not feedback): {shown}")
    if performance.get("estimate_check"):
        check = performance["estimate_check"]
        shown = "  ".join(f"{k}={v:.3f}" for k, v in check["mean_absolute_error"].items())
        out.print(f"estimate vs realized over {check['buckets']} periods, mean absolute error: {shown}")
    _print_timeline(out, report["timeline"])
    for alert in report.get("alerts", []):
        out.print(f"[red]alert[/] {alert['rule']} (value {alert['value']:.4g})")
    raise typer.Exit(STATUS_CODES[report["status"]])


def _write(report: dict[str, Any], format: ReportFormat, output: Path) -> None:
    """The report as JSON or HTML, written atomically."""
    import json

    from molen.atomic import write_atomic

    if format is ReportFormat.html:
        from molen.monitor.html import report_html

        text = report_html(report)
    else:
        text = json.dumps(report, indent=2, default=str)
    write_atomic(output, text.encode())


def _print_timeline(out: Any, timeline: list[dict[str, Any]]) -> None:
    """Drift and performance per period, when the window spans more than one."""
    if len(timeline) < 2:
        return
    from rich.table import Table

    names = sorted({name for entry in timeline for name in (*entry["metrics"], *entry["estimated"])})
    shown = [name for name in ("accuracy", "f1", "roc_auc", "mae", "rmse") if name in names][:1]
    table = Table(box=None, header_style="bold", title="over time", title_justify="left")
    for column in ("from", "rows", "drifted", "p95 ms", "feedback", *shown, *(f"est. {n}" for n in shown)):
        table.add_column(column)
    for entry in timeline:
        realized = [f"{entry['metrics'][n]:.3f}" if n in entry["metrics"] else "" for n in shown]
        estimated = [f"{entry['estimated'][n]:.3f}" if n in entry["estimated"] else "" for n in shown]
        names = [name for name, found in entry["drift"].items() if found["drifted"]]
        drifted = f"{entry['drifted_share']:.0%}" + (
            f" {', '.join(names[:3])}{'…' if len(names) > 3 else ''}" if names else ""
        )
        table.add_row(
            entry["start"][:16].replace("T", " ").replace(" 00:00", ""),
            f"{entry['rows']:,}",
            f"[red]{drifted}[/]" if entry["dataset_drift"] else drifted,
            f"{entry['latency_ms_p95']:.1f}",
            f"{entry['coverage']:.0%}",
            *realized,
            *estimated,
        )
    out.print(table)

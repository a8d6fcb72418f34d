"""``molen monitor``: drift, data quality, volume and performance of a served model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from molen.cli.app import ReportFormat, app, open_workspace_of


@app.command()
def monitor(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION (its reference is the baseline).")],
    window: Annotated[str, typer.Option(help="How far back from now: 30m, 12h, 1d, 2w.")] = "1d",
    drift_share: Annotated[
        float, typer.Option(help="Share of drifted features that makes the dataset drift.")
    ] = 0.5,
    format: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the JSON or HTML report here.")
    ] = None,
    on_alert: Annotated[
        str | None,
        typer.Option("--on-alert", help="A shell command to run when the status is alert (e.g. retrain)."),
    ] = None,
) -> None:
    """Is it still working? Drift of inputs and predictions, quality, volume, feedback metrics.

    Exit code: 0 ok, 1 warning (a feature drifted or a quality check failed), 2 alert (the dataset or
    the predictions drifted), so cron and CI can act on it.
    """
    from molen.cli.render import console, print_json
    from molen.monitor.alerts import raise_alerts
    from molen.monitor.report import STATUS_CODES, parse_window
    from molen.monitor.report import monitor as run_monitor

    workspace = open_workspace_of(ctx)
    frames: dict[str, object] = {}
    report = run_monitor(
        model,
        log_root=workspace.settings["serving.prediction_log"],
        workspace=workspace,
        window=parse_window(window),
        drift_share=drift_share,
        frames=frames,
    )
    raise_alerts(report, workspace, report_path=output, on_alert=on_alert)
    if format is not ReportFormat.table and output is not None:
        import json

        from molen.atomic import write_atomic

        if format is ReportFormat.html:
            from molen.monitor.html import report_html

            text = report_html(report, frames)
        else:
            text = json.dumps(report, indent=2, default=str)
        write_atomic(output, text.encode())
        console().print(f"{report['status'].upper()}: wrote {output}")
        raise typer.Exit(STATUS_CODES[report["status"]])
    if format is ReportFormat.json:
        print_json(report)
        raise typer.Exit(STATUS_CODES[report["status"]])
    if format is ReportFormat.html:
        from molen.monitor.html import report_html

        typer.echo(report_html(report, frames))
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
            f"[yellow]quality[/] {check['column']}: {check['check']} in {share} of rows {check['detail']}"
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
    raise typer.Exit(STATUS_CODES[report["status"]])

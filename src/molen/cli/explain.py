"""``molen explain``: why the model answered what it did, row by row."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from molen.cli.app import ReportFormat, app, open_workspace_of


@app.command()
def explain(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="NAME@ALIAS, NAME/VERSION or run:RUN/model (not with --request-id).")
    ] = None,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="Rows to explain: a .csv or .parquet file.")
    ] = None,
    request_id: Annotated[
        str | None,
        typer.Option("--request-id", help="Explain a served prediction from the prediction log instead."),
    ] = None,
    rows: Annotated[int, typer.Option(min=1, help="Explain at most this many rows (the first ones).")] = 20,
    top: Annotated[int, typer.Option(min=1, help="Features shown per row in the table.")] = 5,
    format: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write the JSON or HTML here instead of printing it."),
    ] = None,
    png: Annotated[
        Path | None, typer.Option("--png", help="Also write the plots as PNG files into this folder.")
    ] = None,
) -> None:
    """Per-row feature attributions (SHAP): how much each input moved the model's output.

    Attributions plus the base value equal the explained output (log-odds for tree and linear models,
    the probability or prediction otherwise).
    """

    from molen.cli.render import console, print_json
    from molen.data.frames import read_table
    from molen.errors import UsageError
    from molen.explain.shapley import explain as explain_rows
    from molen.registry.service import load_model

    if request_id is not None:
        _explain_request(ctx, request_id, top, format)
        return
    if model is None or input is None:
        raise UsageError("give MODEL and --input rows.csv, or --request-id ID of a served prediction")
    frame = read_table(input, what="--input")
    predictor = load_model(model, workspace=open_workspace_of(ctx))
    explanation = explain_rows(predictor, frame.head(rows))
    if png is not None or format is ReportFormat.html:
        from molen.explain.plots import explanation_html, render_plots

        images = render_plots(explanation)
        if png is not None:
            png.mkdir(parents=True, exist_ok=True)
            for name, data in images.items():
                (png / name).write_bytes(data)
            console().print(f"Wrote {len(images)} plots to {png}")
        if format is ReportFormat.html:
            page = explanation_html(
                explanation, title=f"Why {predictor.uri} answered what it did", images=images
            )
            _emit(page, output)
            return
    if format is ReportFormat.json:
        import json

        doc = {
            "model": predictor.name,
            "version": predictor.version,
            "explainer": explanation.explainer,
            "output": explanation.output,
            "features": explanation.features,
            "rows": explanation.rows(),
        }
        if output is None:
            print_json(doc)
        else:
            _emit(json.dumps(doc, indent=2), output)
        return
    out = console()
    out.print(
        f"[bold]{predictor.uri}[/]: {explanation.explainer} explainer, explaining the {explanation.output}"
    )
    for index, row in enumerate(explanation.rows()):
        ranked = sorted(row["attributions"].items(), key=lambda item: -abs(item[1]))[:top]
        shown = "  ".join(
            f"{name}={explanation.data[name].iloc[index]!s} [{_colour(value)}]{value:+.3g}[/]"
            for name, value in ranked
        )
        out.print(f"row {index}: base value {row['base_value']:.4g} → {row['output']:.4g}   {shown}")


def _colour(value: float) -> str:
    return "green" if value > 0 else "red"


def _emit(text: str, output: Path | None) -> None:
    from molen.atomic import write_atomic
    from molen.cli.render import console

    if output is None:
        typer.echo(text)
        return
    write_atomic(output, text.encode())
    console().print(f"Wrote {output}")


def _explain_request(ctx: typer.Context, request_id: str, top: int, format: ReportFormat) -> None:
    from molen.cli.render import console, print_json
    from molen.explain.requests import explain_request

    workspace = open_workspace_of(ctx)
    found = explain_request(
        request_id, log_root=workspace.settings["serving.prediction_log"], workspace=workspace
    )
    if format is ReportFormat.json:
        print_json({**found._asdict(), "timestamp": str(found.timestamp)})
        return
    out = console()
    when = "logged when served" if found.logged else "computed now from the logged inputs"
    out.print(
        f"request [bold]{found.request_id}[/]: {found.model}/{found.version} ({found.role}) answered "
        f"{found.prediction!r} at {found.timestamp}"
    )
    out.print(
        f"{found.explainer} explainer, {when}; the {found.output}: {found.base_value:.4g} → {found.value:.4g}"
    )
    for name, value in sorted(found.attributions.items(), key=lambda item: -abs(item[1]))[:top]:
        out.print(f"  {name} = {found.inputs.get(name)!s}  [{_colour(value)}]{value:+.4g}[/]")

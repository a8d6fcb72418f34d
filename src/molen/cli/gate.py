"""``molen gate`` (the CI quality gate) and ``molen lineage`` (where a model or data came from,
and where it went)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from molen.cli.app import ShowFormat, app, open_workspace_of

if TYPE_CHECKING:
    from molen.registry.gate import GateRule


def rules_from(metric: str | None, min_delta: float, rules: Path | None) -> list[GateRule]:
    """The gate rules: from a rules file, or the one rule --metric/--min-delta give (no metric:
    the gate picks AUC for classifiers, RMSE for regressors)."""
    from molen.registry.gate import GateRule, default_direction, load_rules

    if rules is not None:
        return load_rules(rules)
    return [GateRule(metric or "", default_direction(metric or "auc"), min_delta)]


def print_verdict(verdict: dict[str, Any]) -> None:
    """The comparison table and the verdict line."""
    from rich.table import Table

    from molen.cli.render import console, format_value

    out = console()
    against = verdict["against"]
    champion = f"v{against['version']}" if against["version"] is not None else "none"
    table = Table(
        title=(
            f"gate: {verdict['model']} v{verdict['candidate']['version']} vs @{against['alias']} ({champion})"
        ),
        box=None,
        header_style="bold",
        title_justify="left",
    )
    for column in ("metric", "better", "candidate", "champion", "change", "result"):
        table.add_column(column)
    for check in verdict["rules"]:
        delta = check.get("delta")
        table.add_row(
            check["metric"],
            check["direction"],
            format_value(check["candidate"]),
            format_value(check["champion"]),
            "" if delta is None else f"{delta:+.4g}",
            "[green]pass[/]" if check["passed"] else f"[red]fail[/] {check['reason']}",
        )
    out.print(table)
    mark = "[bold green]PASSED[/]" if verdict["passed"] else "[bold red]FAILED[/]"
    out.print(f"{mark}: {verdict['reason']}")


@app.command()
def gate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    candidate: Annotated[str, typer.Option("--candidate", help="Version to judge, or latest.")] = "latest",
    against: Annotated[
        str, typer.Option("--against", help="Alias holding the current model.")
    ] = "production",
    data: Annotated[
        Path | None, typer.Option("--data", help="Holdout data (.parquet/.csv) both models are scored on.")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Column of --data with the true outcome.")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="Metric to compare (one rule; default: auc, or rmse for regressors)."),
    ] = None,
    min_delta: Annotated[
        float,
        typer.Option("--min-delta", help="Least improvement required; negative tolerates a small loss."),
    ] = 0.0,
    rules: Annotated[Path | None, typer.Option("--rules", help="gate.yaml with several rules.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the JSON verdict.")] = Path(
        "gate-verdict.json"
    ),
    summary: Annotated[
        Path, typer.Option("--summary", help="Where to write the Markdown summary (for a PR comment).")
    ] = Path("gate-summary.md"),
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """The CI quality gate: exit 0 if the candidate is at least as good as NAME@AGAINST, else 1.

    With --data, both models are scored on the same holdout rows.

    Without it, the metrics their runs recorded are compared.

    With no model at the alias yet, the candidate passes.
    """
    import json

    from molen.atomic import write_atomic
    from molen.cli.render import print_json
    from molen.registry.gate import run_gate, summary_markdown

    verdict = run_gate(
        name,
        candidate=candidate,
        against=against,
        data=data,
        target=target,
        rules=rules_from(metric, min_delta, rules),
        workspace=open_workspace_of(ctx),
    )
    write_atomic(output, json.dumps(verdict, indent=2, default=str).encode())
    write_atomic(summary, summary_markdown(verdict).encode())
    if format is ShowFormat.json:
        print_json(verdict)
    else:
        print_verdict(verdict)
    raise typer.Exit(0 if verdict["passed"] else 1)


@app.command()
def lineage(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            help="A model (NAME@ALIAS, NAME/VERSION, run:RUN/model) or data (PATH.molen, a hash)."
        ),
    ],
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """Where a model came from (run, data, commit, environment), or where data went.

    For data (PATH.molen, a tracked path, a hash): the runs that used it, the models they made.
    """
    from molen.cli.render import print_json
    from molen.registry.lineage import data_lineage, model_lineage

    workspace = open_workspace_of(ctx)
    is_model = ("@" in target or target.startswith(("run:", "models:/"))) or (
        "/" in target and target.rsplit("/", 1)[1].isdigit() and not Path(target).exists()
    )
    tree = (
        model_lineage(target, workspace=workspace) if is_model else data_lineage(target, workspace=workspace)
    )
    if format is ShowFormat.json:
        print_json(tree)
    elif is_model:
        _print_model_tree(tree)
    else:
        _print_data_tree(tree)


def _print_model_tree(tree: dict[str, Any]) -> None:
    from rich.tree import Tree

    from molen.cli.render import console, format_time

    model = tree["model"]
    aliases = " ".join(f"@{a}" for a in model["aliases"])
    label = f"{model['name']}/{model['version']}" if model["version"] else model["digest"][:12]
    root = Tree(f"[bold]model {label}[/] {aliases} ({model['flavor']}, package {model['digest'][:12]})")
    run = tree["run"]
    node = root.add(
        f"run {run['id'][:8]} [bold]{run['name']}[/] ({run['experiment']}, {run['status']}, "
        f"{format_time(run['start_time'])}, {run['user'] or ''})"
        if run
        else "run: not recorded"
    )
    data = node.add("data versions")
    for item in tree["data"]:
        pointer = f" (pointer {item['pointer']})" if item["pointer"] else ""
        data.add(f"{item['role']:<6} {item['path']}{pointer} {item['kind']} {item['digest'][:12]}")
    if not tree["data"]:
        data.add("none recorded (run.log_input or molen repro records them)")
    code = tree["code"]
    if code.get("commit"):
        dirty = " + uncommitted changes" if code.get("dirty") == "true" else ""
        node.add(f"commit {code['commit'][:12]} on {code.get('branch', '?')}{dirty}")
    else:
        node.add("commit: not in a git repository")
    env = node.add("environment")
    for key, value in tree["environment"].items():
        if key == "packages_snapshot":
            env.add(f"installed packages: artifact molen/packages.txt ({value[:12]})")
        elif key != "command":
            env.add(f"{key} {value}")
    if tree["environment"].get("command"):
        node.add(f"command {tree['environment']['command']}")
    console().print(root)


def _print_data_tree(tree: dict[str, Any]) -> None:
    from rich.tree import Tree

    from molen.cli.render import console, format_time

    data = tree["data"]
    root = Tree(f"[bold]data {data['path']}[/] version {data['digest'][:12]}")
    if not tree["runs"]:
        root.add("no run used this data version")
    models: dict[str, list[dict[str, Any]]] = {}
    for model in tree["models"]:
        models.setdefault(model["run_id"], []).append(model)
    for run in tree["runs"]:
        node = root.add(
            f"run {run['id'][:8]} [bold]{run['name']}[/] ({run['experiment']}, {'/'.join(run['roles'])}, "
            f"{run['status']}, {format_time(run['start_time'])})"
        )
        for model in models.get(run["id"], []):
            aliases = "".join(f" @{a}" for a in model["aliases"])
            node.add(f"model [bold]{model['name']}/{model['version']}[/]{aliases}")
    console().print(root)

"""``molen models``: the registry (list, show, register, alias, rollback, diff, delete, promote)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from molen.cli.app import ShowFormat, open_workspace_of

app = typer.Typer(
    help=(
        "The model registry: versions of named models, aliases such as production (every move "
        "kept), diffs, and promotion through the quality gate."
    ),
    no_args_is_help=True,
)


def _split(uri: str) -> tuple[str, int]:
    from molen.errors import UsageError
    from molen.registry.service import parse_model_uri

    ref = parse_model_uri(uri)
    if ref.kind != "version" or ref.version is None:
        raise UsageError(f"{uri!r}: name one version, as in NAME/VERSION")
    return ref.name, ref.version


@app.command("list")
def models_list(
    ctx: typer.Context,
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """Every registered model: latest version, number of versions, aliases."""
    from molen.cli.render import console, format_time, print_json
    from molen.registry.service import list_models

    models = list_models(workspace=open_workspace_of(ctx))
    if format is ShowFormat.json:
        print_json([model.to_dict() for model in models])
        return
    if not models:
        console().print(
            "No registered models yet: run.log_model(model, name=…) or molen models register RUN --name NAME"
        )
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("model", "latest", "versions", "aliases", "created"):
        table.add_column(column)
    for model in models:
        aliases = ", ".join(f"@{alias}→{version}" for alias, version in model.aliases.items())
        table.add_row(
            model.name,
            str(model.latest_version or "—"),
            str(model.version_count),
            aliases or "—",
            format_time(model.created_at),
        )
    console().print(table)


@app.command("show")
def models_show(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="NAME (all versions), NAME/VERSION, NAME@ALIAS or NAME@latest.")
    ],
    card: Annotated[bool, typer.Option("--card", help="Print the model card (Markdown).")] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the model card here (.html or .md).")
    ] = None,
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """A model's versions, or one version: its run, metrics, signature, aliases and their history."""
    from molen.cli.render import console, print_json
    from molen.registry.service import alias_history, list_versions, package_manifest, resolve

    workspace = open_workspace_of(ctx)
    if "/" not in model and "@" not in model and not model.startswith("run:"):
        versions = list_versions(model, workspace=workspace)
        history = alias_history(model, workspace=workspace)
        if format is ShowFormat.json:
            print_json(
                {"versions": [v.to_dict() for v in versions], "alias_history": [e.to_dict() for e in history]}
            )
            return
        _versions_table(model, versions)
        _history_table(history)
        return
    found = resolve(model, workspace=workspace)
    manifest = package_manifest(found.digest, workspace=workspace)
    version = found.version
    if card or output is not None:
        _card(model, output, workspace)
        return
    verdicts = workspace.metadata.registry.verdicts(version.name, version.version) if version else []
    history = alias_history(version.name, workspace=workspace) if version else []
    if format is ShowFormat.json:
        print_json(
            {
                "version": version.to_dict() if version else None,
                "digest": found.digest,
                "manifest": manifest,
                "alias_history": [e.to_dict() for e in history],
                "gate_verdicts": [
                    {"passed": v.passed, "against": v.against_alias, "time": v.time, "verdict": v.verdict}
                    for v in verdicts
                ],
            }
        )
        return
    _version_detail(found, manifest, verdicts)
    _history_table(history)
    console().print(f"\nModel card: molen models show {model} --card  (or -o card.html)")


def _card(uri: str, output: Path | None, workspace: Any) -> None:
    from molen.atomic import write_atomic
    from molen.cli.render import console
    from molen.registry.service import model_card

    if output is None:
        typer.echo(model_card(uri, workspace=workspace))
        return
    text = model_card(uri, html=output.suffix in {".html", ".htm"}, workspace=workspace)
    write_atomic(output, text.encode())
    console().print(f"Wrote the model card to {output}")


def _versions_table(name: str, versions: list[Any]) -> None:
    from rich.table import Table

    from molen.cli.render import console, format_time

    table = Table(title=f"{name}", box=None, header_style="bold", title_justify="left")
    for column in ("version", "aliases", "flavor", "run", "created", "by"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            str(v.version),
            ", ".join(f"@{a}" for a in v.aliases) or "—",
            v.flavor,
            (v.run_id or "—")[:8],
            format_time(v.created_at),
            v.user or "",
        )
    console().print(table)


def _history_table(history: list[Any]) -> None:
    from rich.table import Table

    from molen.cli.render import console, format_time

    if not history:
        return
    table = Table(title="alias history", box=None, header_style="bold", title_justify="left")
    for column in ("when", "alias", "move", "by"):
        table.add_column(column)
    for event in history:
        before = "—" if event.previous is None else str(event.previous)
        after = "removed" if event.version is None else str(event.version)
        table.add_row(
            format_time(event.time),
            f"@{event.alias}",
            f"{before} → {after} ({event.action})",
            event.user or "",
        )
    console().print(table)


def _version_detail(found: Any, manifest: dict[str, Any], verdicts: list[Any]) -> None:
    from rich.table import Table

    from molen.cli.render import console, format_value
    from molen.models.signature import Signature

    out = console()
    version = found.version
    title = version.uri if version else f"run:{found.run_id}/{found.artifact_path}"
    out.print(f"[bold]{title}[/]  {manifest.get('description') or ''}")
    facts = [
        ("aliases", ", ".join(f"@{a}" for a in version.aliases) if version and version.aliases else "—"),
        ("flavor", f"{manifest['flavor']} ({manifest['serialization']})"),
        ("task", manifest.get("task") or "—"),
        ("run", f"{found.run_id} ({(manifest.get('run') or {}).get('experiment', '')})"),
        ("commit", (manifest.get("code") or {}).get("commit", "—")),
        ("digest", found.digest),
        ("logged", manifest.get("created") or ""),
    ]
    for key, value in facts:
        out.print(f"  {key:<8} {value}")
    metrics = manifest.get("metrics") or {}
    if metrics:
        out.print("  metrics  " + "  ".join(f"{k}={format_value(v)}" for k, v in sorted(metrics.items())))
    data = manifest.get("data") or []
    for item in data:
        out.print(f"  data     {item['path']} ({item['role']}) {item['digest'][:12]}")
    table = Table(title="signature", box=None, header_style="bold", title_justify="left")
    for column in ("input", "type", "notes"):
        table.add_column(column)
    for row in Signature.from_dict(manifest["signature"]).describe():
        table.add_row(*row)
    out.print(table)
    importance = manifest.get("importance") or {}
    if importance:
        top = sorted(importance.items(), key=lambda item: -abs(item[1]))[:10]
        out.print("  importance  " + "  ".join(f"{k}={v:.3g}" for k, v in top))
    for verdict in verdicts[-3:]:
        mark = "[green]passed[/]" if verdict.passed else "[red]failed[/]"
        out.print(f"  gate     {mark} against @{verdict.against_alias} ({verdict.verdict.get('reason', '')})")


@app.command("register")
def models_register(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id (or unique prefix) that logged the model.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Registered model name.")],
    path: Annotated[str, typer.Option("--path", help="Artifact path the run logged the model at.")] = "model",
) -> None:
    """Register the model a run logged as the next version of NAME."""
    from molen.cli.render import console
    from molen.registry.service import register_run

    version = register_run(run, name, artifact_path=path, workspace=open_workspace_of(ctx))
    console().print(f"Registered [bold]{version.uri}[/] from run {version.run_id}")


@app.command("alias")
def models_alias(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version number the alias should point at.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. production, staging, champion.")],
) -> None:
    """Point NAME@ALIAS at VERSION (the move is kept in the alias history)."""
    from molen.cli.render import console
    from molen.registry.service import parse_version, set_alias

    event = set_alias(name, parse_version(version), alias, workspace=open_workspace_of(ctx))
    before = f" (was {event.previous})" if event.previous is not None else ""
    console().print(f"{name}@{alias} → version {event.version}{before}")


@app.command("unalias")
def models_unalias(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
) -> None:
    """Remove NAME@ALIAS (kept in the alias history)."""
    from molen.cli.render import console
    from molen.registry.service import remove_alias

    event = remove_alias(name, alias, workspace=open_workspace_of(ctx))
    console().print(f"Removed {name}@{alias} (was version {event.previous})")


@app.command("rollback")
def models_rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to move back, e.g. production.")],
) -> None:
    """Move NAME@ALIAS back to the version it held before (again: further back)."""
    from molen.cli.render import console
    from molen.registry.service import rollback_alias

    event = rollback_alias(name, alias, workspace=open_workspace_of(ctx))
    console().print(f"{name}@{alias} rolled back: version {event.previous} → {event.version}")


@app.command("diff")
def models_diff(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    first: Annotated[str, typer.Argument(help="First version.")],
    second: Annotated[str, typer.Argument(help="Second version.")],
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """What changed between two versions: metrics, params, data versions, signature, commit."""
    from rich.table import Table

    from molen.cli.render import console, format_value, print_json
    from molen.registry.compare import diff_versions
    from molen.registry.service import parse_version

    diff = diff_versions(name, parse_version(first), parse_version(second), workspace=open_workspace_of(ctx))
    if format is ShowFormat.json:
        print_json(diff)
        return
    out = console()
    a, b = f"v{diff['a']}", f"v{diff['b']}"
    table = Table(box=None, header_style="bold")
    for column in ("", a, b, "change"):
        table.add_column(column)
    for row in diff["metrics"]:
        delta = row["delta"]
        shown = (
            ""
            if delta is None
            else (f"[green]{delta:+.4g}[/]" if delta > 0 else f"[red]{delta:+.4g}[/]" if delta < 0 else "=")
        )
        table.add_row(f"metrics.{row['key']}", format_value(row["a"]), format_value(row["b"]), shown)
    for row in diff["params"]:
        same = row["a"] == row["b"]
        table.add_row(
            f"params.{row['key']}", str(row["a"]), str(row["b"]), "" if same else "[yellow]changed[/]"
        )
    for row in diff["data"]:
        table.add_row(
            f"data {row['path']}", (row["a"] or "—")[:12], (row["b"] or "—")[:12], "[yellow]changed[/]"
        )
    code = diff["code"]
    table.add_row(
        "commit",
        (code["a"] or "—")[:12],
        (code["b"] or "—")[:12],
        "" if code["a"] == code["b"] else "[yellow]changed[/]",
    )
    flavor = diff["flavor"]
    table.add_row(
        "flavor", flavor["a"], flavor["b"], "" if flavor["a"] == flavor["b"] else "[yellow]changed[/]"
    )
    for row in diff["libraries"]:
        table.add_row(
            f"library {row['package']}", str(row["a"] or "—"), str(row["b"] or "—"), "[yellow]changed[/]"
        )
    out.print(table)
    if diff["signature"]:
        out.print("[bold]signature changes[/]")
        for row in diff["signature"]:
            out.print(f"  {row['column']}: {row['change']}")
    else:
        out.print("signature: unchanged")


@app.command("delete")
def models_delete(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="NAME/VERSION to delete.")],
) -> None:
    """Delete one registered version (refused while an alias points at it; the run stays)."""
    from molen.cli.render import console
    from molen.registry.service import delete_version

    name, version = _split(model)
    delete_version(name, version, workspace=open_workspace_of(ctx))
    console().print(f"Deleted {name}/{version} from the registry (its run and artifacts are kept)")


@app.command("promote")
def models_promote(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to promote.")],
    to: Annotated[str, typer.Option("--to", help="Alias to move.")] = "production",
    gate: Annotated[
        bool, typer.Option("--gate", help="Run the quality gate first; move only if it passes.")
    ] = False,
    data: Annotated[
        Path | None, typer.Option("--data", help="Holdout data for the gate (.parquet/.csv).")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Column of --data with the true outcome.")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="Metric the gate compares (default: auc, or rmse for regressors)."),
    ] = None,
    min_delta: Annotated[
        float, typer.Option("--min-delta", help="Least improvement required (may be negative).")
    ] = 0.0,
    rules: Annotated[Path | None, typer.Option("--rules", help="A gate.yaml with several rules.")] = None,
) -> None:
    """Move NAME@ALIAS to VERSION, with --gate only if it beats the version the alias holds."""
    from molen.cli.gate import print_verdict, rules_from
    from molen.cli.render import console
    from molen.registry.gate import promote
    from molen.registry.service import parse_version

    chosen = rules_from(metric, min_delta, rules)
    verdict, event = promote(
        name,
        parse_version(version),
        to=to,
        gate=gate,
        data=data,
        target=target,
        rules=chosen,
        workspace=open_workspace_of(ctx),
    )
    if verdict is not None:
        print_verdict(verdict)
    if event is None:
        console().print(f"[red]Not promoted[/]: {name}@{to} stays where it was")
        raise typer.Exit(1)
    console().print(
        f"Promoted {name}/{event.version} to @{to}" + (f" (was {event.previous})" if event.previous else "")
    )

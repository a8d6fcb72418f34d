"""``molen exp``: run the pipeline with changed params, sweeps, a table of results, apply one."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from molen.cli.app import RayAddress, open_workspace_of

app = typer.Typer(help="Experiments: the pipeline with changed params, side by side.", no_args_is_help=True)


@app.command("run")
def exp_run(
    ctx: typer.Context,
    stages: Annotated[
        list[str] | None, typer.Argument(help="Stages (default: all).", show_default=False)
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set-param", "-S", help="KEY=VALUE, e.g. train.lr=0.1 (repeatable).")
    ] = None,
    grid_: Annotated[
        list[str] | None, typer.Option("--grid", help="KEY=V1,V2,… : every combination (repeatable).")
    ] = None,
    random_: Annotated[
        int | None, typer.Option("--random", min=1, help="Run N combinations of the --grid, drawn at random.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for --random.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Experiments side by side.")] = 1,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Run name (a sweep numbers its runs).")
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="local (this machine, -j side by side) or ray (each experiment a task on a Ray "
            "cluster; needs shared stores: PostgreSQL and s3://).",
        ),
    ] = "local",
    ray_address: RayAddress = None,
) -> None:
    """Run the pipeline with changed params in a working copy: the workspace is not edited.

    Each experiment is recorded as a run with its overrides; a sweep (--grid, --random) runs
    every combination (-j side by side), each a child of one parent run. See them with
    `molen exp show`; bring one into the workspace with `molen exp apply RUN`.
    """
    from molen.cli.render import console
    from molen.data.tracked import DataSession
    from molen.pipeline.experiments import grid, parse_overrides, run_experiments, sample

    fixed = parse_overrides(set_ or [])
    if grid_:
        combos = sample(grid_, random_, seed) if random_ else grid(grid_)
        variants = [{**fixed, **combo} for combo in combos]
    elif random_:
        raise typer.BadParameter("--random draws from the --grid axes; give at least one --grid")
    else:
        variants = [fixed]
    from molen.cli.quick import print_outcome

    session = DataSession(open_workspace_of(ctx))
    out = console()

    def finished(index: int, result: Any) -> None:
        mark = "[green]ok[/]" if result.ok else "[red]failed[/]"
        out.print(
            f"[dim]{index + 1}/{len(variants)} done on the cluster:[/] {mark} {(result.run_id or '-')[:12]}"
        )

    parent, results = run_experiments(
        session,
        variants,
        targets=stages or None,
        jobs=jobs,
        name=name,
        echo=print_outcome,
        executor=executor,
        ray_address=ray_address,
        on_trial=finished if executor == "ray" else None,
    )
    if len(results) > 1:
        for result in results:
            mark = "[green]ok[/]" if result.ok else "[red]failed[/]"
            what = ", ".join(f"{k}={v}" for k, v in result.overrides.items())
            out.print(f"{mark:>6}  {(result.run_id or '-')[:12]}  {what}")
        out.print(f"[dim]sweep recorded as run {parent[:12] if parent else '-'}: molen exp show[/]")
    if len(results) == 1 and results[0].run_id:
        out.print(f"[dim]recorded as run {results[0].run_id[:12]}: molen exp show[/]")
    if not all(result.ok for result in results):
        if len(results) > 1:
            failed = next(r for r in results if not r.ok)
            out.print(failed.output.rstrip())
        raise typer.Exit(1)


@app.command("show")
def exp_show(
    ctx: typer.Context,
    sort: Annotated[str | None, typer.Option("--sort", help="e.g. -metrics.auc (- for descending).")] = None,
    only_changed: Annotated[
        bool, typer.Option("--only-changed", help="Only the params and metrics that differ between rows.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many experiments.")] = 50,
    format: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
) -> None:
    """A table of the pipeline's runs (molen repro and molen exp): params and metrics."""
    from molen.cli.views import experiments_table
    from molen.tracking.reading import search_runs

    if format not in {"table", "json"}:
        raise typer.BadParameter("use table or json", param_hint="--format")
    records = search_runs(
        "tags.`molen.pipeline` = 'repro'", None, sort, limit=limit, workspace=open_workspace_of(ctx)
    )
    experiments_table(records, format, only_changed=only_changed)


@app.command("apply")
def exp_apply(
    ctx: typer.Context, run: Annotated[str, typer.Argument(help="Run id or unique prefix.")]
) -> None:
    """Bring an experiment's params and outs into the workspace, and its lock into molen.lock."""
    from molen.cli.render import console
    from molen.data.tracked import DataSession
    from molen.pipeline.experiments import apply_experiment

    params = apply_experiment(DataSession(open_workspace_of(ctx)), run)
    console().print(f"applied run {run}: params {', '.join(params) or '(none)'}, outs and molen.lock")

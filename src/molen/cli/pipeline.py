"""``molen repro``, ``molen dag`` and ``molen status``: the pipeline declared in molen.yaml."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated

import typer

from molen.cli.app import RayAddress, app, open_workspace_of

if TYPE_CHECKING:
    from molen.data.tracked import DataSession
    from molen.pipeline.spec import Pipeline

Stages = Annotated[list[str] | None, typer.Argument(help="Stages (default: all).", show_default=False)]


class DagFormat(str, enum.Enum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"


def _pipeline(ctx: typer.Context) -> tuple[DataSession, Pipeline]:
    from molen.config import project_config
    from molen.data.tracked import DataSession
    from molen.pipeline.spec import load_pipeline

    session = DataSession(open_workspace_of(ctx))
    return session, load_pipeline(session.project, project_config(session.project))


@app.command()
def repro(
    ctx: typer.Context,
    stages: Stages = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Run the stages even if up to date.")] = False,
    dry: Annotated[bool, typer.Option("--dry", help="Only tell what would run.")] = False,
    downstream: Annotated[
        bool, typer.Option("--downstream", help="Also the stages that depend on STAGES.")
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Stages run side by side.")] = 1,
    verify: Annotated[
        str | None,
        typer.Option("--verify", metavar="RUN", help="Rebuild this past run from its commit and check it."),
    ] = None,
    tolerance: Annotated[
        float, typer.Option("--tolerance", min=0.0, help="Relative tolerance for metrics with --verify.")
    ] = 1e-9,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="local, or ray: the stages that must run become Ray tasks (resources from "
            "ray.stages.NAME in molen.yaml; shared stores needed). Cached stages never leave.",
        ),
    ] = "local",
    ray_address: RayAddress = None,
) -> None:
    """Run the stages whose cmd, deps or params changed, in dependency order, as one tracked run.

    With --verify RUN: rebuild that past run in a clean checkout of its commit, with its params
    and data versions, and compare outs and metrics (exit 1 if it does not reproduce).
    Stages that do not depend on each other run in parallel with -j. A stage whose cmd, deps
    and params ran before (here, or on a teammate's machine after `molen data pull`) gets its
    outs back from the run cache instead of running. The result is written to molen.lock.
    """
    from molen.cli.quick import pipeline_repro, print_outcome, warn_environment

    workspace = open_workspace_of(ctx)
    if verify is None:
        pipeline_repro(workspace, stages, force, dry, downstream, jobs, executor, ray_address)
        return
    warn_environment(workspace, verify)
    from molen.cli.render import console
    from molen.data.tracked import DataSession
    from molen.pipeline.verify import verify_run

    result = verify_run(DataSession(workspace), verify, tolerance=tolerance, echo=print_outcome)
    out = console()
    if result.reproduced:
        out.print(f"[green]run {result.run_id[:12]} reproduces[/]: same outs, same metrics")
        return
    out.print(f"[red]run {result.run_id[:12]} does not reproduce[/]:")
    for difference in result.differences:
        out.print(f"  {difference}")
    raise typer.Exit(1)


@app.command()
def dag(
    ctx: typer.Context,
    format: Annotated[
        DagFormat, typer.Option("--format", "-f", help="text, mermaid or dot.")
    ] = DagFormat.text,
) -> None:
    """Print the pipeline's graph: which stage feeds which (text, Mermaid or Graphviz dot)."""
    from molen.pipeline.graph import render_dag

    _, pipeline = _pipeline(ctx)
    print(render_dag(pipeline, format.value))


@app.command()
def status(ctx: typer.Context, stages: Stages = None) -> None:
    """Which stages are stale, and why (which cmd, dep, param or out changed)."""
    from molen.cli.render import console
    from molen.pipeline.lock import read_lock
    from molen.pipeline.status import stage_state

    session, pipeline = _pipeline(ctx)
    lock = read_lock(session.project.root)
    out = console()
    stale: set[str] = set()
    for name in pipeline.order(stages or None):
        stage = pipeline.stages[name]
        produced = {path for path in stage.deps if path in pipeline.producer}
        state = stage_state(session, stage, lock.get(name), produced)
        reasons = list(state.reasons)
        reasons += [f"upstream stage {up} is stale" for up in sorted(pipeline.upstream[name] & stale)]
        if reasons:
            stale.add(name)
            out.print(f"[yellow]{'stale':>10}[/]  {name}")
            for reason in reasons:
                out.print(f"{'':>12}{reason}")
        else:
            out.print(f"[green]{'up to date':>10}[/]  {name}")
    if not pipeline.stages:
        out.print("no stages: declare them under `stages:` in molen.yaml")

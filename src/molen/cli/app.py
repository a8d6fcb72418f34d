"""The command tree of ``molen``. Heavy modules are imported inside the commands that use them."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from molen._version import __version__

if TYPE_CHECKING:
    from molen.workspace import Workspace

app = typer.Typer(
    name="molen",
    help=(
        "molen: the machine-learning life cycle in one tool. Track experiments, version data, "
        "run pipelines, register, serve, explain and monitor models.\n\n"
        "Settings resolve flag > environment (MOLEN_…) > molen.yaml > default; "
        "`molen config show` prints them."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
#: Command groups, each in its own module, imported only when invoked (or for --help):
#: a command pays for its own group, not for every command molen has.
GROUPS = {
    "runs": "molen.cli.runs",
    "experiments": "molen.cli.experiments",
    "config": "molen.cli.settings",
    "data": "molen.cli.data",
    "remote": "molen.cli.remote",
    "exp": "molen.cli.exp",
    "models": "molen.cli.models",
    "build": "molen.cli.build",
    "template": "molen.cli.template",
    "tokens": "molen.cli.tokens",
    "import": "molen.cli.importer",
}
#: Top-level commands kept in their own modules (imported the same way); they register
#: themselves on ``app`` when imported.
COMMANDS = {
    "repro": "molen.cli.pipeline",
    "dag": "molen.cli.pipeline",
    "status": "molen.cli.pipeline",
    "gate": "molen.cli.gate",
    "lineage": "molen.cli.gate",
    "serve": "molen.cli.serve",
    "predict": "molen.cli.serve",
    "explain": "molen.cli.explain",
    "monitor": "molen.cli.monitor",
    "server": "molen.cli.server",
    "ui": "molen.cli.server",
}
_added: set[str] = set()
_ROOT_OPTIONS_WITH_VALUES = {"-C", "--project", "--tracking-uri", "--objects-url"}


#: ``--ray-address`` of the commands that can run on a Ray cluster (``--executor ray``).
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address", help="The Ray cluster's HOST:PORT (default: RAY_ADDRESS).", show_default=False
    ),
]


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class ShowFormat(str, Enum):
    table = "table"
    json = "json"


class ReportFormat(str, Enum):
    table = "table"
    json = "json"
    html = "html"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"molen {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    project: Annotated[
        Path | None,
        typer.Option("-C", "--project", help="Run as if started in this folder.", show_default=False),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="Metadata store URL (setting tracking.uri).", show_default=False),
    ] = None,
    objects_url: Annotated[
        str | None,
        typer.Option("--objects-url", help="Object store URL (setting objects.url).", show_default=False),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """molen: the machine-learning life cycle in one tool."""
    if project is not None:
        if not project.is_dir():
            from molen.errors import NotFoundError

            raise NotFoundError(f"-C {project}: no such folder")
        os.chdir(project)
    ctx.obj = {"tracking.uri": tracking_uri, "objects.url": objects_url}


def open_workspace_of(ctx: typer.Context) -> Workspace:
    from molen.workspace import open_workspace

    return open_workspace(flags=ctx.obj or {})


# -- init and config --------------------------------------------------------------------------


@app.command()
def init(
    path: Annotated[
        Path, typer.Argument(help="The project's folder (created if missing); its name names the model.")
    ] = Path("."),
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            "-t",
            help="classification, regression, or blank (molen.yaml only). Default: classification "
            "for a new or empty folder, blank for a folder that already holds files.",
        ),
    ] = None,
    no_git: Annotated[bool, typer.Option("--no-git", help="Make no git repository.")] = False,
    list_templates: Annotated[bool, typer.Option("--list", help="List the templates and exit.")] = False,
    experiment: Annotated[
        str | None, typer.Option(help="Default experiment name (blank projects; default: the folder name).")
    ] = None,
) -> None:
    """Start a project: a ready one from a template (data versioned, a prepare -> train -> evaluate
    pipeline, tests, a lock file, Dockerfile, CI workflows, git), or a blank one in an existing folder.
    """
    from molen.cli.render import console

    out = console()
    if list_templates:
        from molen.scaffold import TEMPLATES

        for found in TEMPLATES.values():
            out.print(f"[bold]{found.name:<15}[/] {found.description}")
        out.print(
            f"[bold]{'blank':<15}[/] molen.yaml and .molen/ only, for a folder that already has its code"
        )
        return
    if template is None:
        existing = path.is_dir() and any(path.iterdir())
        template = "blank" if existing else "classification"
    if template == "blank":
        from molen.project import init_project

        project = init_project(path, experiment=experiment)
        out.print(f"Initialised molen project in [bold]{project.root}[/]")
        return
    from molen.scaffold import create_project

    root = create_project(path, template, git=not no_git, echo=lambda line: out.print(f"[dim]{line}[/]"))
    out.print(f"Created the {template} project [bold]{root.name}[/] in {root}. Next:")
    out.print(f"  cd {path}\n  molen repro            # prepare -> train -> evaluate, the model registered")
    out.print("  molen runs list;  molen models list;  cat README.md")


@app.command()
def demo(
    keep: Annotated[
        Path | None, typer.Option(help="Create the demo project here instead of a temp folder.")
    ] = None,
) -> None:
    """molen's main job: the whole life cycle in a fresh project (init, repro, experiments, gate,
    serve, feedback, drift, alert, retrain, promote), step by step; the project is left behind."""
    from molen.demo import run_demo

    run_demo(keep)


def build(args: list[str]) -> typer.Typer:
    """The root app with the command group ``args`` invoke (all of them for help or no group)."""
    import importlib

    wanted = _group_of(args)
    for name, module in GROUPS.items():
        if (wanted is None or name == wanted) and name not in _added:
            app.add_typer(importlib.import_module(module).app, name=name)
            _added.add(name)
    for name, module in COMMANDS.items():
        if wanted is None or name == wanted:
            importlib.import_module(module)
    _reflow_help(app)
    return app


def _reflow_help(tree: typer.Typer) -> None:
    """Give every command of ``tree`` its docstring with the lines of each paragraph joined:
    Rich keeps a docstring's line breaks, which then fall mid-sentence in a terminal of any
    other width. Lists and indented blocks keep theirs."""
    for info in tree.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = reflowed(info.callback.__doc__)
    for group in tree.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


def reflowed(text: str) -> str:
    """``text`` (a docstring) with each plain paragraph on one line."""
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        paragraph
        if any(line.startswith(("-", "*", "|", " ", "\b")) for line in paragraph.splitlines())
        else " ".join(line.strip() for line in paragraph.splitlines())
        for paragraph in paragraphs
    )


def _group_of(args: list[str]) -> str | None:
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _ROOT_OPTIONS_WITH_VALUES:
            skip = True
        elif not arg.startswith("-"):
            return arg if arg in GROUPS or arg in COMMANDS else None
    return None

"""The data commands, answered before the command tree is built.

``molen data status`` and ``push`` are run many times a day and in scripts; building the Typer
command tree and importing Rich would be a third of their time. This module holds what those
commands do (the Typer commands in :mod:`molen.cli.data` call the same functions), and a small
reader for their plain forms (paths and their documented options); anything else (``--help``, a
bad value, an option placed before ``data``) goes to the full command, which explains it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from molen.data.tracked import DataSession, PathStatus
    from molen.pipeline.repro import StageOutcome
    from molen.progress import Progress
    from molen.workspace import Workspace

__all__ = ["data_checkout", "data_fetch", "data_pull", "data_push", "print_status", "run_quick", "runs_list"]

Name = str | None  # a remote's name (default: setting data.remote)
Jobs = int | None  # parallel transfers (default: setting data.jobs)
_STYLES = {"unchanged": "32", "modified": "33", "deleted": "31", "not-in-cache": "35"}


def progress() -> Progress:
    """A progress bar where someone watches (stderr is a terminal), else none."""
    from molen.progress import SILENT

    if not sys.stderr.isatty():
        return SILENT
    from molen.cli.render import RichProgress

    return RichProgress()


def data_status(session: DataSession, paths: list[str], form: str = "table") -> None:
    """``molen data status``: which tracked paths changed (table or JSON)."""
    print_status(session.status(paths or None, progress=progress()), form)


def data_checkout(session: DataSession, paths: list[str], force: bool = False) -> None:
    """``molen data checkout``: make the workspace match the pointers."""
    changed = session.checkout(paths or None, force=force, progress=progress())
    print(f"checked out {', '.join(changed)}" if changed else "the workspace already matches the pointers")


def data_push(
    session: DataSession, paths: list[str], remote: str | None = None, jobs: int | None = None
) -> None:
    """``molen data push``: send what the remote lacks (with the pipeline's outs and run cache)."""
    from molen.data.transfer import push

    result = push(session, paths or None, remote=remote, jobs=jobs, progress=progress())
    print(
        f"pushed {result.transferred:,} object(s) to {result.remote}; {result.already_present:,} were there"
    )


def data_fetch(
    session: DataSession,
    paths: list[str],
    remote: str | None = None,
    jobs: int | None = None,
    force: bool = False,
) -> None:
    """``molen data fetch``: bring what the cache lacks (with the pipeline's outs and run cache)."""
    from molen.data.transfer import fetch

    result = fetch(
        session,
        paths or None,
        remote=remote,
        jobs=jobs,
        force=force,
        progress=progress(),
    )
    got, there = result.transferred, result.already_present
    print(f"fetched {got:,} object(s) from {result.remote}; {there:,} were cached")


def data_pull(
    session: DataSession,
    paths: list[str],
    remote: str | None = None,
    jobs: int | None = None,
    force: bool = False,
) -> None:
    """``molen data pull``: fetch, then check out (the pipeline's outs too)."""
    from molen.data.transfer import pull

    result, changed = pull(
        session,
        paths or None,
        remote=remote,
        jobs=jobs,
        force=force,
        progress=progress(),
    )
    print(
        f"fetched {result.transferred:,} object(s) from {result.remote}; checked out {len(changed)} path(s)"
    )


def print_status(found: list[PathStatus], form: str) -> None:
    """``molen data status`` output: a line per tracked path, then what changed inside it."""
    if form == "json":
        from molen.cli.render import print_json

        print_json([vars(item) for item in found])
        return
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    lines = []
    for item in found:
        state = f"{item.state:>12}"
        if color:
            state = f"\x1b[{_STYLES[item.state]}m{state}\x1b[0m"
        lines.append(f"{state}  {item.path}")
        for label, names in (("added", item.added), ("removed", item.removed), ("modified", item.modified)):
            lines.extend(f"{'':>14}{label}: {item.path}/{name}" for name in names[:20])
            if len(names) > 20:
                lines.append(f"{'':>14}… and {len(names) - 20} more {label}")
    if not found:
        lines.append("nothing is tracked yet: `molen data add PATH`")
    print("\n".join(lines))


def runs_list(
    experiment: list[str] | None = None,
    filter: str | None = None,
    sort: str | None = None,
    limit: int = 50,
    deleted: bool = False,
    form: str = "table",
    workspace: Workspace | None = None,
) -> None:
    """``molen runs list``: the runs matching ``filter``, newest first (or by ``sort``)."""
    from molen.cli import views
    from molen.tracking.reading import search_runs
    from molen.workspace import open_workspace

    workspace = workspace or open_workspace()
    records = search_runs(
        filter, experiment or None, sort, limit=limit + 1, deleted=deleted, workspace=workspace
    )
    views.runs_table(records[:limit], form, truncated=len(records) > limit, limit=limit)


_ACTION_COLORS = {
    "ran": "32",
    "restored": "36",
    "up-to-date": "2",
    "would-run": "33",
    "failed": "31",
    "skipped": "31",
}


def _paint(code: str, text: str) -> str:
    """``text`` in an ANSI colour where stdout is a terminal (and NO_COLOR is unset)."""
    if sys.stdout.isatty() and "NO_COLOR" not in os.environ:
        return f"\x1b[{code}m{text}\x1b[0m"
    return text


def print_outcome(outcome: StageOutcome) -> None:
    """One line per stage of a repro: what happened, how long it took, why."""
    why = _paint("2", f"  ({'; '.join(outcome.reasons)})") if outcome.reasons else ""
    took = f" in {outcome.seconds:.1f} s" if outcome.action in {"ran", "restored"} else ""
    action = _paint(_ACTION_COLORS.get(outcome.action, "0"), f"{outcome.action:>10}")
    print(f"{action}  {outcome.name}{took}{why}", flush=True)
    if outcome.error:
        print(f"{'':>12}{_paint('31', outcome.error)}", flush=True)


def warn_environment(workspace: Workspace, run_id: str | None = None) -> None:
    """Warn (stderr) when the installed packages differ from the project's requirements.lock,
    and with ``run_id``, from the environment that run recorded."""
    from molen.envlock import environment_differences

    found = environment_differences(workspace, run_id)
    if not found:
        return
    count = f"{len(found)} difference{'s' if len(found) > 1 else ''}"
    print(f"warning: this environment differs from the recorded one ({count}):", file=sys.stderr)
    for line in found[:12]:
        print(f"  {line}", file=sys.stderr)
    if len(found) > 12:
        print(f"  … and {len(found) - 12} more", file=sys.stderr)


def pipeline_repro(
    workspace: Workspace | None = None,
    stages: list[str] | None = None,
    force: bool = False,
    dry: bool = False,
    downstream: bool = False,
    jobs: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
) -> None:
    """``molen repro``: run the stale stages and print what happened to each; exit status 1
    when a stage failed. ``executor="ray"``: the stages that must run go to a Ray cluster."""
    import json
    from pathlib import Path

    from molen.config import project_config
    from molen.data.tracked import DataSession
    from molen.pipeline.repro import EXP_NAME_ENV, OVERRIDES_ENV, PARENT_ENV, RunOptions, repro
    from molen.pipeline.spec import load_pipeline
    from molen.workspace import open_workspace

    session = DataSession(workspace or open_workspace())
    pipeline = load_pipeline(session.project, project_config(session.project))
    warn_environment(session.workspace)
    echo = print_outcome

    options = RunOptions(  # set by `molen exp run` for an experiment of a sweep
        os.environ.get(EXP_NAME_ENV) or "repro",
        os.environ.get(PARENT_ENV) or None,
        os.environ.get(OVERRIDES_ENV, ""),
    )
    remote = None
    if executor == "ray" and not dry:
        from molen.compute import cluster

        shared = cluster.require_shared_stores(session.workspace)
        config = project_config(session.project)
        remote = cluster.RayStages(cluster.connect(ray_address), session, pipeline, shared, config)
    elif executor not in {"local", "ray"}:
        from molen.errors import UsageError

        raise UsageError(f"--executor {executor!r}: use local or ray")
    try:
        result = repro(
            session,
            pipeline,
            stages or None,
            force=force,
            dry=dry,
            downstream=downstream,
            jobs=jobs,
            echo=echo,
            options=options,
            remote=remote,
        )
    finally:
        if remote is not None:
            remote.leave()
    if result.run_id:
        short = result.run_id[:12]
        print(_paint("2", f"recorded as run {short}: molen runs show {short}"))
    if not result.outcomes:
        print("no stages: declare them under `stages:` in molen.yaml")
    report = os.environ.get("MOLEN_REPRO_REPORT")
    if report:  # for `molen exp run`, which runs this in a working copy
        document = {"run_id": result.run_id, "outcomes": [o._asdict() for o in result.outcomes]}
        Path(report).write_text(json.dumps(document))
    if result.failed:
        sys.exit(1)


class _Form(NamedTuple):
    """The plain form of a command: its options taking a value (those in ``repeated`` may be
    given more than once), its flags, the formats it prints, and what it runs."""

    values: dict[str, str]
    flags: dict[str, str]
    run: Callable[..., None]
    paths: bool = True  # it takes paths as arguments
    formats: frozenset[str] = frozenset({"table", "json"})
    repeated: frozenset[str] = frozenset()


def _on_data(run: Callable[..., None]) -> Callable[..., None]:
    """A data command run on the session of the current project."""

    def with_session(paths: list[str], **options: Any) -> None:
        from molen.data.tracked import DataSession
        from molen.workspace import open_workspace

        run(DataSession(open_workspace()), paths, **options)

    return with_session


_REMOTE_JOBS = {"-r": "remote", "--remote": "remote", "-j": "jobs", "--jobs": "jobs"}
_FORMS: dict[tuple[str, ...], _Form] = {
    ("data", "status"): _Form({"-f": "form", "--format": "form"}, {}, _on_data(data_status)),
    ("data", "checkout"): _Form({}, {"--force": "force"}, _on_data(data_checkout)),
    ("data", "push"): _Form(_REMOTE_JOBS, {}, _on_data(data_push)),
    ("data", "fetch"): _Form(_REMOTE_JOBS, {"--force": "force"}, _on_data(data_fetch)),
    ("data", "pull"): _Form(_REMOTE_JOBS, {"--force": "force"}, _on_data(data_pull)),
    ("runs", "list"): _Form(
        {
            "-e": "experiment",
            "--experiment": "experiment",
            "--filter": "filter",
            "--sort": "sort",
            "-n": "limit",
            "--limit": "limit",
            "-f": "form",
            "--format": "form",
        },
        {"--deleted": "deleted"},
        lambda paths, **options: runs_list(**options),
        paths=False,
        formats=frozenset({"table", "json", "csv"}),
        repeated=frozenset({"experiment"}),
    ),
}
_FORMS[("repro",)] = _Form(
    {"-j": "jobs", "--jobs": "jobs"},
    {"--force": "force", "-f": "force", "--dry": "dry", "--downstream": "downstream"},
    lambda stages, **options: pipeline_repro(None, stages, **options),
)
_COUNTS = {"jobs", "limit"}  # whole numbers of at least 1


def run_quick(args: list[str]) -> bool:
    """Run ``args`` here if it is the plain form of a command of this module; False to leave
    it to the full command line."""
    words = 1 if args[:1] == ["repro"] else 2
    form = _FORMS.get(tuple(args[:words])) if len(args) >= words else None
    if form is None:
        return False
    paths: list[str] = []
    options: dict[str, Any] = {}
    rest = iter(args[words:])
    for arg in rest:
        name, _, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in form.values:
            key, value = form.values[name], inline or next(rest, "")
            if not value:
                return False
            if key in form.repeated:
                options.setdefault(key, []).append(value)
            else:
                options[key] = value
        elif arg in form.flags:
            options[form.flags[arg]] = True
        elif arg.startswith("-") or not form.paths:
            return False
        else:
            paths.append(arg)
    for key in _COUNTS & set(options):
        if not options[key].isdigit() or int(options[key]) < 1:
            return False
        options[key] = int(options[key])
    if options.get("form", "table") not in form.formats:
        return False
    form.run(paths, **options)
    return True

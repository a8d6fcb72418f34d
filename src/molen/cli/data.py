"""``molen data``: version data files and folders, and move them between cache and remotes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from molen.cli.app import ShowFormat, open_workspace_of

if TYPE_CHECKING:
    from molen.data.tracked import DataSession

app = typer.Typer(
    help="Version data: add files and folders, see what changed, check out, push and pull.",
    no_args_is_help=True,
)

Paths = Annotated[list[str] | None, typer.Argument(help="Tracked paths (default: all).", show_default=False)]
Remote = Annotated[str | None, typer.Option("--remote", "-r", help="Remote name (default: data.remote).")]
Jobs = Annotated[
    int | None, typer.Option("--jobs", "-j", min=1, help="Parallel transfers (default: data.jobs).")
]


def _session(ctx: typer.Context) -> DataSession:
    from molen.data.tracked import DataSession

    return DataSession(open_workspace_of(ctx))


@app.command("add")
def add(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to track.")],
) -> None:
    """Track files or folders: store their content in the cache and write PATH.molen pointers.

    Commit the pointer files (and the .gitignore beside them) to git; the data stays out of it.
    """
    from molen.cli.render import RichProgress, console

    session = _session(ctx)
    added = session.add([str(p) for p in paths], progress=RichProgress())
    for item in added:
        p = item.pointer
        what = f"{p.files:,} files, " if p.kind == "directory" else ""
        console().print(f"[green]added[/] {item.path}  ({what}{p.size:,} bytes, {p.hash[:12]})")
    ignores = sorted({str(Path(i.path).parent / ".gitignore") for i in added})
    pointers = " ".join(i.path + ".molen" for i in added)
    console().print(f"[dim]commit the pointers: git add {pointers} {' '.join(ignores)}[/]")


@app.command("status")
def status(
    ctx: typer.Context,
    paths: Paths = None,
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """Which tracked paths changed, were added or deleted relative to their pointers."""
    from molen.cli.quick import data_status

    data_status(_session(ctx), paths or [], format.value)


@app.command("checkout")
def checkout(
    ctx: typer.Context,
    paths: Paths = None,
    force: Annotated[
        bool, typer.Option("--force", help="Discard workspace changes not in a pointer.")
    ] = False,
) -> None:
    """Make the workspace match the pointers (after `git checkout` of another commit)."""
    from molen.cli.quick import data_checkout

    data_checkout(_session(ctx), paths or [], force)


@app.command("push")
def push(ctx: typer.Context, paths: Paths = None, remote: Remote = None, jobs: Jobs = None) -> None:
    """Send the tracked data the remote does not have yet."""
    from molen.cli.quick import data_push

    data_push(_session(ctx), paths or [], remote, jobs)


@app.command("fetch")
def fetch(
    ctx: typer.Context,
    paths: Paths = None,
    remote: Remote = None,
    jobs: Jobs = None,
    force: Annotated[
        bool, typer.Option("--force", help="Download again even what the cache has (repairs it).")
    ] = False,
) -> None:
    """Bring tracked data from the remote into the cache, without touching the workspace."""
    from molen.cli.quick import data_fetch

    data_fetch(_session(ctx), paths or [], remote, jobs, force)


@app.command("pull")
def pull(
    ctx: typer.Context,
    paths: Paths = None,
    remote: Remote = None,
    jobs: Jobs = None,
    force: Annotated[
        bool, typer.Option("--force", help="Discard workspace changes not in a pointer.")
    ] = False,
) -> None:
    """Fetch, then check out: the workspace ends up matching the pointers."""
    from molen.cli.quick import data_pull

    data_pull(_session(ctx), paths or [], remote, jobs, force)


@app.command("ls")
def ls(
    ctx: typer.Context,
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """List the tracked paths with their size, file count and hash."""
    from molen.cli.render import console, print_json

    tracked = _session(ctx).tracked()
    if format is ShowFormat.json:
        print_json([{"path": t.path, **t.pointer._asdict()} for t in tracked])
        return
    from rich.table import Table

    table = Table("path", "kind", "files", "size", "hash", box=None, header_style="bold")
    for t in tracked:
        p = t.pointer
        table.add_row(t.path, p.kind, f"{p.files:,}", f"{p.size:,}", p.hash[:12])
    console().print(table if tracked else "nothing is tracked yet: `molen data add PATH`")


@app.command("diff")
def diff(
    ctx: typer.Context,
    old: Annotated[str | None, typer.Argument(help="Git revision (default: HEAD).")] = None,
    new: Annotated[str | None, typer.Argument(help="Git revision (default: the workspace).")] = None,
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """Data files added, deleted and modified between two revisions (or one and the workspace)."""
    from molen.cli.render import console, print_json
    from molen.data.history import diff as diff_data

    changes = diff_data(_session(ctx), old, new)
    if format is ShowFormat.json:
        print_json([vars(c) for c in changes])
        return
    styles = {"added": "green", "deleted": "red", "modified": "yellow"}
    out = console()
    for c in changes:
        before = "-" if c.old_size is None else f"{c.old_size:,}"
        sizes = f"{before} → {'-' if c.new_size is None else f'{c.new_size:,}'}"
        out.print(f"[{styles[c.change]}]{c.change:>8}[/]  {c.path}  [dim]{sizes} bytes[/]")
    if not changes:
        out.print("no data changes")


@app.command("log")
def log(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="A tracked path.")],
    format: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """The versions of a tracked path through git history, and the runs that used each."""
    from molen.cli.render import console, print_json
    from molen.data.history import log as log_data

    entries = log_data(_session(ctx), path)
    if format is ShowFormat.json:
        print_json([{**vars(e), "pointer": e.pointer._asdict()} for e in entries])
        return
    from rich.table import Table

    table = Table(
        "commit", "date", "author", "hash", "size", "runs", "message", box=None, header_style="bold"
    )
    for e in entries:
        runs = ", ".join(r[:8] for r in e.runs[:5]) + (f" +{len(e.runs) - 5}" if len(e.runs) > 5 else "")
        table.add_row(
            e.commit[:8], e.date, e.author, e.pointer.hash[:12], f"{e.pointer.size:,}", runs, e.subject
        )
    console().print(table)


@app.command("gc")
def gc(
    ctx: typer.Context,
    all_commits: Annotated[
        bool, typer.Option("--all-commits", help="Keep what any commit of any branch needs, not only HEAD.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be removed.")] = False,
) -> None:
    """Remove cache objects that no pointer (workspace, HEAD or --all-commits) and no run needs."""
    from molen.cli.render import console
    from molen.data.gc import collect_garbage

    result = collect_garbage(_session(ctx), all_commits=all_commits, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    console().print(
        f"{verb} {result.removed:,} object(s), {result.removed_bytes:,} bytes; kept {result.kept:,}"
    )


@app.command("unprotect")
def unprotect(
    ctx: typer.Context, paths: Annotated[list[str], typer.Argument(help="Tracked files or folders.")]
) -> None:
    """Make linked (read-only) data files private writable copies, to edit them safely."""
    from molen.cli.render import console

    replaced = _session(ctx).unprotect(paths)
    console().print(f"{len(replaced)} file(s) are now private, writable copies")

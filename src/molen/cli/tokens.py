"""``molen tokens``: who may use ``molen server --auth``."""

from __future__ import annotations

from typing import Annotated

import typer

from molen.cli.app import open_workspace_of

app = typer.Typer(no_args_is_help=True, help="Access tokens of molen server --auth.")


def _token_store(ctx: typer.Context) -> object:
    from molen.errors import UsageError

    workspace = open_workspace_of(ctx)
    url = str(workspace.settings["tracking.uri"])
    if url.startswith(("http://", "https://")):
        raise UsageError(
            "tokens live in the server's database: run this where it is reachable, with "
            "--tracking-uri postgresql+psycopg://… (or sqlite:///…) as molen server's --store"
        )
    return workspace.metadata


@app.command("create")
def tokens_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who or what uses it (a person, a CI job).")],
    role: Annotated[str, typer.Option(help="read, write or admin.")] = "read",
) -> None:
    """Make a token and print its secret (once: only its hash is kept)."""
    from molen.errors import InvalidValueError
    from molen.server.auth import ROLES, new_secret, secret_digest

    if role not in ROLES:
        raise InvalidValueError(f"--role {role!r}: use read, write or admin")
    store = _token_store(ctx)
    secret = new_secret()
    store.create_token(name, role, secret_digest(secret))  # type: ignore[attr-defined]
    typer.echo(secret)
    typer.echo(
        f"token {name!r} ({role}) created; give it as MOLEN_TRACKING_TOKEN (or MLFLOW_TRACKING_TOKEN)",
        err=True,
    )


@app.command("list")
def tokens_list(ctx: typer.Context) -> None:
    """Every token's name, role and creation time (never the secret)."""
    from molen.cli.render import format_time

    for name, role, created in _token_store(ctx).list_tokens():  # type: ignore[attr-defined]
        typer.echo(f"{name}\t{role}\t{format_time(created)}")


@app.command("delete")
def tokens_delete(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The token to revoke.")]
) -> None:
    """Revoke a token (servers stop accepting it within seconds)."""
    _token_store(ctx).delete_token(name)  # type: ignore[attr-defined]
    typer.echo(f"token {name!r} deleted")

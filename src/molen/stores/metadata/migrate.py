"""Schema versions: Alembic migrations, applied automatically when a store is opened.

Checking the version is one query on ``alembic_version``; Alembic itself (slow to import) is
loaded only when a migration must run. A database stamped with a revision this molen does not
know was written by a newer molen and is refused with a clear error rather than misread.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from molen.errors import SchemaVersionError
from molen.stores.metadata.revisions import HEAD, KNOWN_REVISIONS

__all__ = ["HEAD", "KNOWN_REVISIONS", "ensure_schema"]


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
        return None if row is None else str(row[0])


def _upgrade(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.connect() as connection:
        # a write transaction from the start (BEGIN IMMEDIATE on SQLite), so two processes
        # opening a new store queue here instead of failing; the second finds nothing to do
        connection.execution_options(molen_write=True)
        with connection.begin():
            if connection.dialect.name == "postgresql":
                # one migrator at a time across processes; released at commit
                connection.execute(text("SELECT pg_advisory_xact_lock(7418203)"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")


def ensure_schema(engine: Engine, *, url_for_errors: str) -> None:
    """Bring the database at ``engine`` to the current schema, creating it if empty.

    Raises :class:`SchemaVersionError` when the database comes from a newer molen.
    """
    revision = _current_revision(engine)
    if revision == HEAD:
        return
    if revision is not None and revision not in KNOWN_REVISIONS:
        raise SchemaVersionError(
            f"the metadata store {url_for_errors} has schema revision {revision}, written by a "
            "newer molen; upgrade molen (pip install -U molen) to use it"
        )
    try:
        _upgrade(engine)
    except SQLAlchemyError:
        # another process may have migrated the same database at the same moment
        if _current_revision(engine) != HEAD:
            raise

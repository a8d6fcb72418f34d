"""Alembic environment: molen always hands in an open connection (never a URL from an ini)."""

from __future__ import annotations

from alembic import context

from molen.stores.metadata.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

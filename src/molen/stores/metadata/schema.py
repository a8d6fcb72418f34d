"""The metadata schema: SQLAlchemy Core tables shared by SQLite and PostgreSQL.

Core tables rather than ORM classes: every query molen runs is a set operation (bulk metric
inserts, filtered searches), and skipping the ORM keeps ``molen runs list`` fast to start.
Times are integer milliseconds since the epoch (the unit MLflow's protocol uses too).
A NaN metric value is stored as NULL (SQLite cannot store NaN) and read back as NaN.

Changing this file needs a new Alembic migration in ``migrations/versions/``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "alias_events",
    "artifacts",
    "data_versions",
    "experiments",
    "gate_verdicts",
    "latest_metrics",
    "metadata",
    "metrics",
    "model_aliases",
    "model_versions",
    "params",
    "registered_models",
    "requests",
    "run_inputs",
    "runs",
    "tags",
    "tokens",
]

KEY = 250
ID = 32
DIGEST = 64

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

experiments = Table(
    "experiments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(KEY), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("lifecycle", String(16), nullable=False, server_default="active"),
    UniqueConstraint("name"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("experiment_id", Integer, ForeignKey("experiments.id"), nullable=False),
    Column("name", String(KEY), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger),
    Column("parent_id", String(ID), ForeignKey("runs.id")),
    Column("lifecycle", String(16), nullable=False, server_default="active"),
    Column("user", String(KEY)),
    Column("host", String(KEY)),
    Column("pid", Integer),
    Column("pid_started", Float),
    Column("heartbeat", BigInteger),
    Index(None, "experiment_id", "start_time"),
    Index(None, "status"),
    Index(None, "parent_id"),
)

params = Table(
    "params",
    metadata,
    Column("run_id", String(ID), ForeignKey("runs.id"), primary_key=True),
    Column("key", String(KEY), primary_key=True),
    Column("value", Text, nullable=False),
    Index(None, "key"),
)

tags = Table(
    "tags",
    metadata,
    Column("run_id", String(ID), ForeignKey("runs.id"), primary_key=True),
    Column("key", String(KEY), primary_key=True),
    Column("value", Text, nullable=False),
    Index(None, "key"),
)

metrics = Table(
    "metrics",
    metadata,
    Column("run_id", String(ID), ForeignKey("runs.id"), nullable=False),
    Column("key", String(KEY), nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("value", Float),
    Index(None, "run_id", "key", "step"),
)

latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_id", String(ID), ForeignKey("runs.id"), primary_key=True),
    Column("key", String(KEY), primary_key=True),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("value", Float),
    Index(None, "key", "value"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("run_id", String(ID), ForeignKey("runs.id"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("digest", String(DIGEST), nullable=False),
    Column("size", BigInteger, nullable=False),
    Index(None, "digest"),
)

data_versions = Table(
    "data_versions",
    metadata,
    Column("digest", String(DIGEST), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("file_count", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

run_inputs = Table(
    "run_inputs",
    metadata,
    Column("run_id", String(ID), ForeignKey("runs.id"), primary_key=True),
    Column("digest", String(DIGEST), ForeignKey("data_versions.digest"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("role", String(16), primary_key=True),
    Index(None, "digest"),
)

registered_models = Table(
    "registered_models",
    metadata,
    Column("name", String(KEY), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("description", Text),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("name", String(KEY), ForeignKey("registered_models.name"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("run_id", String(ID), ForeignKey("runs.id")),
    Column("artifact_path", String(1024), nullable=False),
    Column("digest", String(DIGEST), nullable=False),
    Column("flavor", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("user", String(KEY)),
    Column("description", Text),
    Index(None, "run_id"),
    Index(None, "digest"),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("name", String(KEY), ForeignKey("registered_models.name"), primary_key=True),
    Column("alias", String(KEY), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("user", String(KEY)),
)

alias_events = Table(
    "alias_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(KEY), nullable=False),
    Column("alias", String(KEY), nullable=False),
    Column("version", Integer),
    Column("previous", Integer),
    Column("action", String(16), nullable=False),
    Column("time", BigInteger, nullable=False),
    Column("user", String(KEY)),
    Index(None, "name", "alias"),
)

gate_verdicts = Table(
    "gate_verdicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(KEY), nullable=False),
    Column("candidate", Integer, nullable=False),
    Column("against_alias", String(KEY), nullable=False),
    Column("against_version", Integer),
    Column("passed", Integer, nullable=False),
    Column("time", BigInteger, nullable=False),
    Column("user", String(KEY)),
    Column("verdict", Text, nullable=False),
    Index(None, "name", "candidate"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("name", String(KEY), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("hash", String(DIGEST), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("hash"),
)

#: The writes ``molen server`` has done, by the id its client gave the request, with the answer:
#: a retried request (its answer lost on the way) is answered again instead of done twice.
requests = Table(
    "requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("answer", Text),
    Index(None, "created_at"),
)

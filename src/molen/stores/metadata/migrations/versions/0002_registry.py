"""The model registry: registered models, their versions, aliases, alias history, gate verdicts.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("description", sa.Text),
        sa.PrimaryKeyConstraint("name", name="pk_registered_models"),
    )
    op.create_table(
        "model_versions",
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(32)),
        sa.Column("artifact_path", sa.String(1024), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("flavor", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("user", sa.String(250)),
        sa.Column("description", sa.Text),
        sa.PrimaryKeyConstraint("name", "version", name="pk_model_versions"),
        sa.ForeignKeyConstraint(["name"], ["registered_models.name"], name="fk_model_versions_name"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_model_versions_run_id"),
    )
    op.create_index("ix_model_versions_run_id", "model_versions", ["run_id"])
    op.create_index("ix_model_versions_digest", "model_versions", ["digest"])
    op.create_table(
        "model_aliases",
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("alias", sa.String(250), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("user", sa.String(250)),
        sa.PrimaryKeyConstraint("name", "alias", name="pk_model_aliases"),
        sa.ForeignKeyConstraint(["name"], ["registered_models.name"], name="fk_model_aliases_name"),
    )
    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("alias", sa.String(250), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("previous", sa.Integer),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("time", sa.BigInteger, nullable=False),
        sa.Column("user", sa.String(250)),
        sa.PrimaryKeyConstraint("id", name="pk_alias_events"),
    )
    op.create_index("ix_alias_events_name_alias", "alias_events", ["name", "alias"])
    op.create_table(
        "gate_verdicts",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("candidate", sa.Integer, nullable=False),
        sa.Column("against_alias", sa.String(250), nullable=False),
        sa.Column("against_version", sa.Integer),
        sa.Column("passed", sa.Integer, nullable=False),
        sa.Column("time", sa.BigInteger, nullable=False),
        sa.Column("user", sa.String(250)),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gate_verdicts"),
    )
    op.create_index("ix_gate_verdicts_name_candidate", "gate_verdicts", ["name", "candidate"])


def downgrade() -> None:
    for name in ("gate_verdicts", "alias_events", "model_aliases", "model_versions", "registered_models"):
        op.drop_table(name)

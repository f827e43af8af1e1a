"""Retraining runs: one row per ``finpulse retrain`` run, with the gate's verdict.

Revision ID: 0006
Revises: 0001
Create Date: 2026-11-29

A frozen snapshot of ``finpulse.storage.tables.retrain_runs`` at this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retrain_runs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("champion", sa.String(200), nullable=False),
        sa.Column("challenger", sa.String(200), nullable=True),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("gold", sa.JSON(), nullable=False),
        sa.Column("feedback", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.CheckConstraint(
            "decision IN ('promoted', 'rejected', 'failed')", name="ck_retrain_runs_decision"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_retrain_runs"),
    )
    op.create_index("ix_retrain_runs_started_at", "retrain_runs", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_retrain_runs_started_at", table_name="retrain_runs")
    op.drop_table("retrain_runs")

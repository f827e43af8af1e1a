"""Retraining triggered by model-health alerts: a longer ``trigger`` and the ``leases`` table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

``retrain_runs.trigger`` grows from 16 to 250 characters to hold
``model_health:<alert id>`` (alert ids are at most 200). ``leases`` holds one row per
exclusive job (``retrain``), so two ``finpulse retrain --every`` processes never train at
once. A frozen snapshot of those parts of ``finpulse/storage/tables.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("retrain_runs") as batch:
        batch.alter_column("trigger", existing_type=sa.String(16), type_=sa.String(250),
                           existing_nullable=False)
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    # Triggers longer than the old column would not fit: shorten them to their kind.
    op.execute("UPDATE retrain_runs SET trigger = 'model_health' "
               "WHERE trigger LIKE 'model_health:%'")
    with op.batch_alter_table("retrain_runs") as batch:
        batch.alter_column("trigger", existing_type=sa.String(250), type_=sa.String(16),
                           existing_nullable=False)

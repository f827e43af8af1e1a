"""Score roles and the shadow model: ``scores.role``, ``model_versions.shadow``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

``scores.role`` says what a score is for: ``live`` (every existing row: what the pipeline
knew when it scored the stream, the only scores live readers use), ``shadow`` (a challenger
scoring the stream beside the champion) or ``rescore`` (``finpulse rescore``).
``model_versions.shadow`` flags the version the scorers run in shadow. A frozen snapshot of
those parts of ``finpulse/storage/tables.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.add_column(
            sa.Column("role", sa.String(8), nullable=False, server_default=sa.text("'live'"))
        )
        batch.create_check_constraint("ck_scores_role", "role IN ('live', 'shadow', 'rescore')")
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(
            sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("shadow")
    # Only live scores existed before 0007.
    op.execute("DELETE FROM scores WHERE role <> 'live'")
    with op.batch_alter_table("scores") as batch:
        batch.drop_constraint("ck_scores_role", type_="check")
        batch.drop_column("role")

"""Every story a risk-event alert has counted: ``alert_stories``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Before this table a risk-event pass knew an alert's stories only from its evidence
(``alert_posts``, at most ``explain_posts`` posts), so each pass that re-read a story beyond
those counted it again. Existing risk-event alerts (the ``1m`` ones) are filled in from
their evidence, the only record there is; their values are left as they were. A window
rule on ``1m`` windows gets rows too, which nothing reads. A frozen snapshot of
``finpulse.storage.tables.alert_stories`` at this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_stories",
        sa.Column("alert_id", sa.String(200), nullable=False),
        sa.Column("story", sa.String(200), nullable=False),
        sa.Column("post_id", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_alert_stories_alert_id_alerts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("alert_id", "story", name="pk_alert_stories"),
    )
    op.execute(
        "INSERT INTO alert_stories (alert_id, story, post_id) "
        "SELECT ap.alert_id, COALESCE(p.cluster_id, p.id), MIN(p.id) "
        "FROM alert_posts ap JOIN posts p ON p.id = ap.post_id "
        "JOIN alerts a ON a.id = ap.alert_id "
        "WHERE a.window_size = '1m' "
        "GROUP BY ap.alert_id, COALESCE(p.cluster_id, p.id)"
    )


def downgrade() -> None:
    op.drop_table("alert_stories")

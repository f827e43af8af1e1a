"""Delivery to subscribers, API keys, feedback, alert acknowledgement.

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-29

Adds ``subscriptions``, ``outbox`` (alert events written in the alert's own transaction),
``deliveries`` (one per event and matching subscription, with its retry state),
``api_keys`` (hashed), ``feedback`` (analysts' corrected labels) and the acknowledgement
columns of ``alerts``. A frozen snapshot of those parts of ``finpulse/storage/tables.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("acked_by", sa.String(200), nullable=True))
        batch.add_column(_ts("acked_at", nullable=True))
        batch.add_column(sa.Column("ack_comment", sa.Text(), nullable=True))

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.String(2000), nullable=False),
        sa.Column("tickers", sa.JSON(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("min_severity", sa.String(16), nullable=False),
        sa.Column("secret", sa.String(200), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("deleted_at", nullable=True),
        sa.CheckConstraint(
            "channel IN ('webhook', 'email', 'slack', 'kafka')", name="ck_subscriptions_channel"
        ),
        sa.CheckConstraint(
            "min_severity IN ('info', 'warning', 'critical')", name="ck_subscriptions_min_severity"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_subscriptions"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("dispatched_at", nullable=True),
        sa.CheckConstraint("kind IN ('fired', 'updated', 'resolved')", name="ck_outbox_kind"),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_alert_id", "outbox", ["alert_id"])
    op.create_index("ix_outbox_dispatched_at_id", "outbox", ["dispatched_at", "id"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.String(32), nullable=False),
        sa.Column("alert_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("event_at"),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("delivered_at", nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'dead')", name="ck_deliveries_status"
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["outbox.id"], name="fk_deliveries_event_id_outbox"
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name="fk_deliveries_subscription_id_subscriptions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint(
            "event_id", "subscription_id", name="uq_deliveries_event_id_subscription_id"
        ),
    )
    op.create_index(
        "ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"]
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
        sa.CheckConstraint("role IN ('reader', 'analyst', 'admin')", name="ck_api_keys_role"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("post_id", sa.String(200), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        _ts("created_at"),
        sa.CheckConstraint(
            "label IN ('negative', 'neutral', 'positive')", name="ck_feedback_label"
        ),
        sa.ForeignKeyConstraint(
            ["post_id"], ["posts.id"], name="fk_feedback_post_id_posts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
    )
    op.create_index("ix_feedback_post_id", "feedback", ["post_id"])
    op.create_index("ix_feedback_created_at", "feedback", ["created_at"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("api_keys")
    op.drop_index("ix_deliveries_status_next_attempt_at", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index("ix_outbox_dispatched_at_id", table_name="outbox")
    op.drop_index("ix_outbox_alert_id", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("subscriptions")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("ack_comment")
        batch.drop_column("acked_at")
        batch.drop_column("acked_by")

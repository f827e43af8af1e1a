"""Initial schema: posts, scores, aggregates, alerts, rule state, model versions.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Times are ``timestamptz`` on PostgreSQL and naive-UTC text on SQLite
(``finpulse.storage.tables.UTCDateTime`` converts at the edge). This file is a frozen snapshot
of ``finpulse/storage/tables.py`` at this revision; ``tests/storage/test_migrations.py`` checks
that the two agree.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "posts",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("url", sa.String(2000), nullable=True),
        sa.Column("author", sa.String(200), nullable=True),
        _ts("published_at"),
        sa.Column("tickers", sa.JSON(), nullable=False),
        sa.Column("lang", sa.String(16), nullable=True),
        _ts("stored_at"),
        sa.PrimaryKeyConstraint("id", name="pk_posts"),
    )
    op.create_index("ix_posts_published_at", "posts", ["published_at"])

    op.create_table(
        "post_tickers",
        sa.Column("post_id", sa.String(200), nullable=False),
        sa.Column("ticker", sa.String(10), nullable=False),
        _ts("published_at"),
        sa.ForeignKeyConstraint(
            ["post_id"], ["posts.id"], name="fk_post_tickers_post_id_posts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("post_id", "ticker", name="pk_post_tickers"),
    )
    op.create_index(
        "ix_post_tickers_ticker_published_at", "post_tickers", ["ticker", "published_at"]
    )

    op.create_table(
        "scores",
        sa.Column("post_id", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("p_negative", sa.Float(), nullable=False),
        sa.Column("p_neutral", sa.Float(), nullable=False),
        sa.Column("p_positive", sa.Float(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        _ts("scored_at"),
        _ts("stored_at"),
        sa.CheckConstraint("label IN ('negative', 'neutral', 'positive')", name="ck_scores_label"),
        sa.ForeignKeyConstraint(
            ["post_id"], ["posts.id"], name="fk_scores_post_id_posts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("post_id", "model_version", name="pk_scores"),
    )
    op.create_index("ix_scores_stored_at", "scores", ["stored_at"])

    op.create_table(
        "aggregates",
        sa.Column("ticker", sa.String(10), nullable=False),
        sa.Column("window_size", sa.String(4), nullable=False),
        _ts("window_start"),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("n_negative", sa.Integer(), nullable=False),
        sa.Column("mean_score", sa.Float(), nullable=False),
        sa.Column("score_std", sa.Float(), nullable=False),
        sa.Column("weighted_score", sa.Float(), nullable=False),
        sa.Column("negative_share", sa.Float(), nullable=False),
        sa.Column("volume", sa.Float(), nullable=False),
        _ts("last_published_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("ticker", "window_size", "window_start", name="pk_aggregates"),
    )
    op.create_index(
        "ix_aggregates_window_size_window_start", "aggregates", ["window_size", "window_start"]
    )

    op.create_table(
        "alerts",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("ticker", sa.String(10), nullable=False),
        sa.Column("window_size", sa.String(4), nullable=False),
        _ts("window_start"),
        _ts("last_window_start"),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("baseline", sa.Float(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        _ts("fired_at"),
        _ts("resolved_at", nullable=True),
        _ts("updated_at"),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.CheckConstraint("state IN ('firing', 'resolved')", name="ck_alerts_state"),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_rule_ticker", "alerts", ["rule", "ticker"])
    op.create_index("ix_alerts_state_fired_at", "alerts", ["state", "fired_at"])
    op.create_index("ix_alerts_ticker_fired_at", "alerts", ["ticker", "fired_at"])

    op.create_table(
        "alert_posts",
        sa.Column("alert_id", sa.String(200), nullable=False),
        sa.Column("post_id", sa.String(200), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_alert_posts_alert_id_alerts", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["post_id"], ["posts.id"], name="fk_alert_posts_post_id_posts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("alert_id", "post_id", name="pk_alert_posts"),
    )

    op.create_table(
        "rule_cursors",
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("window_size", sa.String(4), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        _ts("closed_until"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("rule", name="pk_rule_cursors"),
    )

    op.create_table(
        "rule_baselines",
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("ticker", sa.String(10), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("rule", "ticker", name="pk_rule_baselines"),
    )

    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(200), nullable=False),
        _ts("created_at"),
        sa.Column("base", sa.String(500), nullable=False),
        sa.Column("method", sa.String(40), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("artifact_path", sa.String(1000), nullable=False),
        sa.Column("trainable_params", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("promoted_at", nullable=True),
        _ts("retired_at", nullable=True),
        sa.Column("retired_reason", sa.String(32), nullable=True),
        sa.CheckConstraint(
            "status IN ('champion', 'challenger', 'retired')", name="ck_model_versions_status"
        ),
        sa.PrimaryKeyConstraint("version", name="pk_model_versions"),
    )
    op.create_index("ix_model_versions_status", "model_versions", ["status"])


def downgrade() -> None:
    for table in (
        "model_versions",
        "rule_baselines",
        "rule_cursors",
        "alert_posts",
        "alerts",
        "aggregates",
        "scores",
        "post_tickers",
        "posts",
    ):
        op.drop_table(table)

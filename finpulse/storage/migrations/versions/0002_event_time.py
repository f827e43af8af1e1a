"""Event time: partition progress, dirty windows, per-ticker rule state, stories per window.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

- ``partition_progress``: each input partition's newest ``published_at`` (the watermark).
- ``dirty_windows``: (ticker, minute) buckets with new scores, awaiting re-aggregation.
- ``rule_baselines.next_start`` and ``rule_snapshots``: per-(rule, ticker) progress, and
  the state before each judged window so a late post can re-open it.
- ``posts.cluster_id`` (near-duplicate cluster, filled later) and ``aggregates.n_unique``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("posts") as batch:
        batch.add_column(sa.Column("cluster_id", sa.String(200), nullable=True))
        batch.create_index("ix_posts_cluster_id", ["cluster_id"])
    with op.batch_alter_table("aggregates") as batch:
        batch.add_column(
            sa.Column("n_unique", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    # Existing windows: every post was its own story until clusters existed.
    op.execute("UPDATE aggregates SET n_unique = n")
    with op.batch_alter_table("rule_baselines") as batch:
        batch.add_column(_ts("next_start", nullable=True))

    op.create_table(
        "rule_snapshots",
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("ticker", sa.String(10), nullable=False),
        _ts("window_start"),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("rule", "ticker", "window_start", name="pk_rule_snapshots"),
    )
    op.create_table(
        "partition_progress",
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False, autoincrement=False),
        _ts("max_published_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("topic", "partition", name="pk_partition_progress"),
    )
    op.create_table(
        "dirty_windows",
        sa.Column("ticker", sa.String(10), nullable=False),
        _ts("minute_start"),
        sa.Column("n", sa.Integer(), nullable=False),
        _ts("marked_at"),
        sa.PrimaryKeyConstraint("ticker", "minute_start", name="pk_dirty_windows"),
    )
    op.create_index("ix_dirty_windows_minute_start", "dirty_windows", ["minute_start"])


def downgrade() -> None:
    op.drop_index("ix_dirty_windows_minute_start", table_name="dirty_windows")
    for table in ("dirty_windows", "partition_progress", "rule_snapshots"):
        op.drop_table(table)
    with op.batch_alter_table("rule_baselines") as batch:
        batch.drop_column("next_start")
    with op.batch_alter_table("aggregates") as batch:
        batch.drop_column("n_unique")
    with op.batch_alter_table("posts") as batch:
        batch.drop_index("ix_posts_cluster_id")
        batch.drop_column("cluster_id")

"""Near-duplicate clusters: ``posts.cluster_id`` (the id of the first post of the story).

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-29

Posts stored before this revision have no cluster (NULL): readers count them as their
own cluster, ``COALESCE(cluster_id, id)``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("posts") as batch:
        batch.add_column(sa.Column("cluster_id", sa.String(200), nullable=True))
    op.create_index("ix_posts_cluster_id", "posts", ["cluster_id"])


def downgrade() -> None:
    op.drop_index("ix_posts_cluster_id", table_name="posts")
    with op.batch_alter_table("posts") as batch:
        batch.drop_column("cluster_id")

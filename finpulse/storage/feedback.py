"""Analysts' feedback: corrected labels for posts, which the retraining job learns from.

A post may receive several labels over time (analysts disagree, or change their mind);
every one is kept with its author and time, and the retraining job decides how to use them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from finpulse.storage import tables as t
from finpulse.storage.database import Storage, utcnow

LABELS = ("negative", "neutral", "positive")


class FeedbackExample(NamedTuple):
    """One analyst label with the labelled post: its text, label, time, source, id and title."""

    text: str
    label: str
    created_at: datetime
    source: str
    post_id: str
    title: str | None


class UnknownPost(LookupError):
    """Feedback names a post that is not stored."""


def add_feedback(
    storage: Storage, post_id: str, label: str, author: str, comment: str | None = None
) -> dict[str, Any]:
    """Store one label for a post and return the stored row.

    Raises:
        ValueError: ``label`` is not negative, neutral or positive.
        UnknownPost: no post has this id.
        StorageError: the database refused or is unreachable.
    """
    if label not in LABELS:
        raise ValueError(f"label: must be one of {', '.join(LABELS)}")
    row = {"post_id": post_id, "label": label, "author": author, "comment": comment,
           "created_at": utcnow()}
    with storage.begin() as conn:
        exists = conn.execute(sa.select(t.posts.c.id).where(t.posts.c.id == post_id)).first()
        if exists is None:
            raise UnknownPost(f"post: no post with id {post_id!r}")
        ident = conn.execute(
            sa.insert(t.feedback).values(row).returning(t.feedback.c.id)
        ).scalar_one()
    return {"id": ident, **row}


def feedback_examples(storage: Storage, since: datetime | None = None) -> list[FeedbackExample]:
    """Every feedback label joined to its post, oldest first (ties in the order given).

    The one reader of the ``feedback`` table: the retraining job and
    ``Storage.feedback_examples`` both use it.

    Args:
        storage: the database.
        since: only feedback given at or after this time.

    Raises:
        StorageError: the query failed.
    """
    f, p = t.feedback, t.posts
    query = sa.select(p.c.text, f.c.label, f.c.created_at, p.c.source, p.c.id, p.c.title).join(
        p, p.c.id == f.c.post_id)
    if since is not None:
        query = query.where(f.c.created_at >= since)
    with storage.begin() as conn:
        rows = conn.execute(query.order_by(f.c.created_at, f.c.id)).all()
    return [FeedbackExample(*row) for row in rows]

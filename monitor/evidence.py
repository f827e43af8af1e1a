"""The posts behind an alert, with their links and copy counts, and how they are written down.

One module for every kind of alert: window rules (``monitor.alerting``), risk events and
model health. An alert's explanation is one line for people, the rule's summary then its
posts, each with its score, a snippet, its link (``posts.url``) when it has one and, for a
story published more than once, how many copies its near-duplicate cluster holds::

    sentiment_drop on 1h windows: ... | most negative posts: p-17 (-0.91) "Acme probed for fraud" <https://...> [3 copies]
    risk_event on ACME: ... | evidence: p-17 (-0.91) "Acme probed for fraud" <https://...> [3 copies]

Window rules list their most negative posts; risk events and model health rank theirs by
their own rule (first post first, least confident first), hence "evidence". The same posts,
ranked, are stored in ``alert_posts``. A post counts with its latest live score (latest
``scored_at``), as in the aggregates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from finpulse.storage import tables as t

POSTS_SEPARATOR = " | most negative posts: "
EVIDENCE_SEPARATOR = " | evidence: "
SNIPPET_CHARS = 80


class Evidence(NamedTuple):
    """One post behind an alert: its link, when it has one, and its story's copies."""

    post_id: str
    score: float
    snippet: str
    url: str | None = None
    story: str | None = None  # its cluster key (see ``cluster_key``)
    copies: int = 1  # posts of the same story, this one included


def snippet(text: str) -> str:
    """The text on one line, cut to ``SNIPPET_CHARS``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


def cluster_key() -> Any:
    """SQL for a post's story: its cluster id, or its own id when it has none."""
    return sa.func.coalesce(t.posts.c.cluster_id, t.posts.c.id)


def cluster_sizes(conn: sa.Connection, keys: Iterable[str]) -> dict[str, int]:
    """How many stored posts each story (cluster key) has.

    Args:
        conn: an open connection.
        keys: cluster keys (``cluster_id``, or a post id for an unclustered post).

    Returns:
        key -> number of posts (at least 1 for a key that names a stored post).
    """
    wanted = sorted(set(keys))
    sizes = dict.fromkeys(wanted, 1)
    p = t.posts
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        rows = conn.execute(
            sa.select(p.c.cluster_id, sa.func.count())
            .where(p.c.cluster_id.in_(chunk))
            .group_by(p.c.cluster_id)
        )
        for key, count in rows:
            sizes[key] = max(int(count), 1)
    return sizes


def with_copies(conn: sa.Connection, posts: list[Evidence]) -> list[Evidence]:
    """``posts`` with ``copies`` filled in from their near-duplicate clusters."""
    sizes = cluster_sizes(conn, [e.story for e in posts if e.story])
    return [e._replace(copies=sizes.get(e.story, 1)) if e.story else e for e in posts]


def evidence_for(conn: sa.Connection, posts: Iterable[tuple[str, float]]) -> list[Evidence]:
    """Snippets, links and copy counts for ``(post id, score)`` pairs, in the given order.

    Args:
        conn: an open connection.
        posts: post ids with the score to show for each (ids not stored are left out).

    Returns:
        One ``Evidence`` per stored post, in the order given.
    """
    pairs = list(posts)
    if not pairs:
        return []
    p = t.posts
    rows = {
        row.id: row
        for row in conn.execute(
            sa.select(p.c.id, p.c.title, p.c.text, p.c.url, cluster_key().label("story")).where(
                p.c.id.in_([post_id for post_id, _ in pairs])
            )
        )
    }
    return with_copies(conn, [
        Evidence(post_id, score, snippet(row.title or row.text), row.url, row.story)
        for post_id, score in pairs
        if (row := rows.get(post_id)) is not None
    ])


def rank(posts: list[Evidence], limit: int) -> list[Evidence]:
    """The ``limit`` most negative posts (ties by id, so the order is reproducible)."""
    return sorted(posts, key=lambda e: (e.score, e.post_id))[:limit]


def window_posts(
    conn: sa.Connection, ticker: str, start: datetime, end: datetime, limit: int
) -> list[Evidence]:
    """The most negative posts about ``ticker`` published in ``[start, end)``."""
    p, pt, s = t.posts, t.post_tickers, t.scores
    query = (
        sa.select(p.c.id, p.c.title, p.c.text, p.c.url, cluster_key().label("story"),
                  s.c.score, s.c.scored_at, s.c.model_version)
        .join(pt, pt.c.post_id == p.c.id)
        .join(s, sa.and_(s.c.post_id == p.c.id, s.c.role == t.LIVE))
        .where(pt.c.ticker == ticker, pt.c.published_at >= start, pt.c.published_at < end)
    )
    latest: dict[str, tuple[Any, Evidence]] = {}
    for post_id, title, text, url, story, score, scored_at, version in conn.execute(query):
        if post_id not in latest or (scored_at, version) > latest[post_id][0]:
            latest[post_id] = (
                (scored_at, version),
                Evidence(post_id, score, snippet(title or text), url, story),
            )
    return with_copies(conn, rank([evidence for _, evidence in latest.values()], limit))


def stored_pairs(conn: sa.Connection, alert_id: str) -> list[tuple[str, float]]:
    """The ``(post id, score)`` pairs recorded for an alert, in rank order."""
    ap = t.alert_posts
    rows = conn.execute(
        sa.select(ap.c.post_id, ap.c.score).where(ap.c.alert_id == alert_id).order_by(ap.c.rank)
    )
    return [(post_id, score) for post_id, score in rows]


def stored_posts(conn: sa.Connection, alert_id: str) -> list[Evidence]:
    """The posts already recorded for an alert, in rank order."""
    return evidence_for(conn, stored_pairs(conn, alert_id))


def write_posts(conn: sa.Connection, alert_id: str, posts: Sequence[Evidence]) -> None:
    """Replace an alert's recorded posts with ``posts`` (rank 1 first)."""
    ap = t.alert_posts
    conn.execute(sa.delete(ap).where(ap.c.alert_id == alert_id))
    if posts:
        rows = [
            {"alert_id": alert_id, "post_id": e.post_id, "rank": i, "score": e.score}
            for i, e in enumerate(posts, 1)
        ]
        conn.execute(sa.insert(ap), rows)


def explain(summary: str, posts: Sequence[Evidence], separator: str = POSTS_SEPARATOR) -> str:
    """The explanation line: the rule's summary, then the posts (none: the summary alone).

    Args:
        summary: the rule's verdict in words.
        posts: the posts to list, in order.
        separator: ``POSTS_SEPARATOR`` (window rules) or ``EVIDENCE_SEPARATOR``.
    """
    if not posts:
        return summary
    listed = "; ".join(
        f'{e.post_id} ({e.score:+.2f}) "{e.snippet}"'
        + (f" <{e.url}>" if e.url else "")
        + (f" [{e.copies} copies]" if e.copies > 1 else "")
        for e in posts
    )
    return f"{summary}{separator}{listed}"


def summary_of(explanation: str) -> str:
    """The summary part of an explanation written by ``explain``."""
    for separator in (POSTS_SEPARATOR, EVIDENCE_SEPARATOR):
        explanation = explanation.partition(separator)[0]
    return explanation

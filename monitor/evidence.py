"""The posts behind an alert: finding the most negative ones and writing them down.

An alert's explanation is one line for people, ``<rule summary> | most negative posts:
<id> (<score>) "<snippet>" <url> [N copies]; ...`` (link and copies when there are any),
and the same posts, ranked, in ``alert_posts``. A post counts with its latest score
(latest ``scored_at``), as in the aggregates; ``N copies`` is the size of its
near-duplicate cluster (the same story re-published).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from finpulse.storage import tables as t
from monitor.event_alerts import cluster_key, cluster_sizes

POSTS_SEPARATOR = " | most negative posts: "
SNIPPET_CHARS = 80


class Evidence(NamedTuple):
    """One post behind an alert: its link, when it has one, and its story's copies."""

    post_id: str
    score: float
    snippet: str
    url: str | None = None
    story: str | None = None
    copies: int = 1


def with_copies(conn: sa.Connection, posts: list[Evidence]) -> list[Evidence]:
    """``posts`` with ``copies`` filled in from their near-duplicate clusters."""
    sizes = cluster_sizes(conn, [e.story for e in posts if e.story])
    return [e._replace(copies=sizes.get(e.story, 1)) if e.story else e for e in posts]


def snippet(text: str) -> str:
    """The text on one line, cut to ``SNIPPET_CHARS``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


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


def stored_posts(conn: sa.Connection, alert_id: str) -> list[Evidence]:
    """The posts already recorded for an alert."""
    ap, p = t.alert_posts, t.posts
    rows = conn.execute(
        sa.select(ap.c.post_id, ap.c.score, p.c.title, p.c.text, p.c.url,
                  cluster_key().label("story"))
        .join(p, p.c.id == ap.c.post_id)
        .where(ap.c.alert_id == alert_id)
    )
    return with_copies(conn, [
        Evidence(pid, score, snippet(title or text), url, story)
        for pid, score, title, text, url, story in rows
    ])


def write_posts(conn: sa.Connection, alert_id: str, posts: list[Evidence]) -> None:
    """Replace an alert's recorded posts with ``posts`` (rank 1 = most negative)."""
    ap = t.alert_posts
    conn.execute(sa.delete(ap).where(ap.c.alert_id == alert_id))
    if posts:
        rows = [
            {"alert_id": alert_id, "post_id": e.post_id, "rank": i, "score": e.score}
            for i, e in enumerate(posts, 1)
        ]
        conn.execute(sa.insert(ap), rows)


def explain(summary: str, posts: list[Evidence]) -> str:
    """The explanation line: the rule's summary, then the posts."""
    listed = "; ".join(
        f'{e.post_id} ({e.score:+.2f}) "{e.snippet}"'
        + (f" <{e.url}>" if e.url else "")
        + (f" [{e.copies} copies]" if e.copies > 1 else "")
        for e in posts
    )
    return f"{summary}{POSTS_SEPARATOR}{listed}"


def summary_of(explanation: str) -> str:
    """The summary part of an explanation written by ``explain``."""
    return explanation.partition(POSTS_SEPARATOR)[0]

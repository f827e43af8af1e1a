"""Scores beside the live ones: shadow scores, rescored history, and views of one version.

Every score row has a role (``scores.role``, ``finpulse.storage.tables.SCORE_ROLES``):

- ``live``: what the pipeline knew when it scored the stream. Aggregates, dirty markers,
  alerts, risk events, model health, evidence and the history's default view read these only.
- ``shadow``: the registry's shadow version scoring the live stream beside the champion,
  stored in the champion's transaction (``save_shadow``) and compared with it
  (``finpulse.storage.comparison.shadow_report``).
- ``rescore``: ``finpulse rescore`` re-scoring stored posts with another registered version
  ("what we know now"), while the live scores stay what alerts used ("what we knew then").

A post has at most one score per model version (the primary key), whatever its role: a
version that already scored a post, live or not, is never asked again, which makes
rescoring idempotent. ``version_series`` and ``search_posts(model=...)`` read one version's
scores, whatever their role.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finpulse.schemas import WINDOW_SECONDS, Post, ScoredPost
from finpulse.storage import tables as t
from finpulse.storage.buckets import epoch_bucket, window_start
from finpulse.storage.database import Storage, _describe, _is_transient, utcnow
from finpulse.storage.pages import Page, decode_cursor, paginate

logger = logging.getLogger(__name__)


def _score_row(post: ScoredPost, role: str, now: datetime) -> dict[str, Any]:
    return {
        "post_id": post.id,
        "model_version": post.model_version,
        "label": post.label,
        "score": post.score,
        "p_negative": post.probabilities.get("negative", 0.0),
        "p_neutral": post.probabilities.get("neutral", 0.0),
        "p_positive": post.probabilities.get("positive", 0.0),
        "confidence": post.confidence,
        "scored_at": post.scored_at,
        "stored_at": now,
        "role": role,
    }


def insert_scores(
    storage: Storage, conn: Connection, posts: Sequence[ScoredPost], role: str
) -> int:
    """Insert non-live scores of stored posts (a score already stored is skipped); no dirty markers.

    Returns:
        The number of new score rows.
    """
    if role not in t.SCORE_ROLES or role == t.LIVE:
        raise ValueError(f"role: {role!r} is not a non-live score role")
    now = utcnow()
    rows = list({(p.id, p.model_version): _score_row(p, role, now) for p in posts}.values())
    if not rows:
        return 0
    # Rows as arrays on PostgreSQL, like ``Storage.save_scored``.
    return len(storage.insert_new(conn, t.scores, rows, t.scores.c.post_id))


def save_shadow(
    storage: Storage,
    conn: Connection,
    posts: Sequence[ScoredPost],
    *,
    skip: Collection[str] = (),
    on_error: Callable[[Exception], None] | None = None,
) -> int:
    """Store shadow scores inside the caller's (the live batch's) transaction, in a savepoint.

    A refusal rolls back to the savepoint and goes to ``on_error`` (logged without one): the
    live scores of the same transaction are kept. A transient fault propagates, since it
    loses the whole transaction and the caller retries it anyway.

    Args:
        storage: the database.
        conn: the live batch's transaction.
        posts: shadow-scored posts (their model version is the shadow's).
        skip: post ids not to store a score for (stored earlier with other content).
        on_error: called with the refusal.

    Returns:
        The number of new shadow score rows (0 when refused).
    """
    kept = [p for p in posts if p.id not in skip]
    if not kept:
        return 0
    try:
        with conn.begin_nested():
            return insert_scores(storage, conn, kept, "shadow")
    except sa.exc.SQLAlchemyError as exc:
        if _is_transient(exc):
            raise
        if on_error is not None:
            on_error(exc)
        else:
            logger.error("shadow scores of %d posts refused, live scores kept: %s",
                         len(kept), _describe(exc))
        return 0


# ---- rescoring -------------------------------------------------------------------------------


def _unscored(version: str, since: datetime | None, until: datetime | None) -> Any:
    """Posts published in ``[since, until)`` with a live score and no score of ``version``."""
    p, s = t.posts, t.scores
    mine = sa.select(s.c.post_id).where(s.c.post_id == p.c.id, s.c.model_version == version)
    live = sa.select(s.c.post_id).where(s.c.post_id == p.c.id, s.c.role == t.LIVE)
    where = [sa.exists(live), ~sa.exists(mine)]
    if since is not None:
        where.append(p.c.published_at >= since)
    if until is not None:
        where.append(p.c.published_at < until)
    return sa.and_(*where)


def count_to_rescore(
    storage: Storage, version: str, since: datetime | None, until: datetime | None
) -> int:
    """How many posts ``posts_to_rescore`` would still hand out."""
    query = sa.select(sa.func.count()).select_from(t.posts).where(_unscored(version, since, until))
    with storage.begin() as conn:
        return int(conn.execute(query).scalar_one())


def posts_to_rescore(
    storage: Storage,
    version: str,
    since: datetime | None,
    until: datetime | None,
    *,
    after: tuple[datetime, str] | None = None,
    limit: int = 256,
) -> list[Post]:
    """The next posts without a score of ``version``, oldest first (keyset on published_at, id).

    Args:
        storage: the database.
        version: the model version that will score them.
        since: posts published at or after this time (None: from the first).
        until: ...and before this time (None: to the last).
        after: the (published_at, id) of the last post of the previous batch.
        limit: at most this many.
    """
    p = t.posts
    query = sa.select(p).where(_unscored(version, since, until))
    if after is not None:
        query = query.where(sa.tuple_(p.c.published_at, p.c.id) > sa.tuple_(*after))
    query = query.order_by(p.c.published_at, p.c.id).limit(limit)
    with storage.begin() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        Post(id=r["id"], source=r["source"], text=r["text"], title=r["title"], url=r["url"],
             author=r["author"], published_at=r["published_at"], tickers=tuple(r["tickers"]),
             lang=r["lang"])
        for r in rows
    ]


def save_rescored(storage: Storage, posts: Sequence[ScoredPost]) -> int:
    """Store rescored posts' scores (``role = 'rescore'``) in one transaction.

    Returns:
        The number of new score rows (a score of that version already stored is kept).

    Raises:
        StorageError: the database refused.
    """
    with storage.begin() as conn:
        return insert_scores(storage, conn, posts, "rescore")


def versions_of_scores(storage: Storage) -> dict[str, dict[str, int]]:
    """Score rows per model version and role: ``{version: {role: n}}``."""
    s = t.scores
    query = sa.select(s.c.model_version, s.c.role, sa.func.count()).group_by(
        s.c.model_version, s.c.role
    )
    out: dict[str, dict[str, int]] = {}
    with storage.begin() as conn:
        for version, role, n in conn.execute(query):
            out.setdefault(version, {})[role] = int(n)
    return out


# ---- one version's view ----------------------------------------------------------------------


def _first_start(ts: datetime, seconds: int) -> datetime:
    """The first window start at or after ``ts``."""
    start = window_start(ts, seconds)
    return start if start >= ts else start + timedelta(seconds=seconds)


def version_series(
    storage: Storage,
    ticker: str,
    window: str,
    version: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    """A ticker's sentiment series computed from one model version's scores, oldest window first.

    The same numbers the live aggregates hold (``monitor.aggregation``), computed on the fly
    with one ``GROUP BY`` over time buckets from the scores of ``version`` (any role): for
    the version that scored every post live they equal the stored aggregates. A post that
    ``version`` never scored is not counted.

    Args:
        storage: the database.
        ticker: the ticker.
        window: ``1m``, ``5m``, ``1h`` or ``1d``.
        version: the model version.
        since: windows starting at or after this time.
        until: windows starting before this time.
        limit: at most this many windows.
        cursor: ``next_cursor`` of the previous page.

    Raises:
        ValueError: the cursor is not one this list produced.
    """
    seconds = WINDOW_SECONDS[window]
    pt, s = t.post_tickers, t.scores
    # Bounds on published_at (indexed) that select exactly the wanted windows.
    lower: datetime | None = _first_start(since, seconds) if since is not None else None
    if cursor is not None:
        (start,) = decode_cursor(cursor, [datetime])
        after = start + timedelta(seconds=seconds)
        lower = after if lower is None else max(lower, after)
    bucket = epoch_bucket(storage.dialect, pt.c.published_at, seconds).label("bucket")
    negative = sa.case((s.c.label == "negative", 1), else_=0)
    query = (
        sa.select(
            bucket,
            sa.func.count(),
            sa.func.sum(negative),
            sa.func.sum(s.c.score),
            sa.func.sum(s.c.confidence),
            sa.func.sum(s.c.confidence * s.c.score),
        )
        .join(s, sa.and_(s.c.post_id == pt.c.post_id, s.c.model_version == version))
        .where(pt.c.ticker == ticker.upper())
    )
    if lower is not None:
        query = query.where(pt.c.published_at >= lower)
    if until is not None:
        query = query.where(pt.c.published_at < _first_start(until, seconds))
    query = query.group_by(bucket).order_by(bucket).limit(limit + 1)
    with storage.begin() as conn:
        rows = conn.execute(query).all()
    items = []
    for epoch, n, n_neg, total, conf, conf_score in rows:
        n, n_neg = int(n), int(n_neg)
        mean = float(total) / n
        items.append({
            "ticker": ticker.upper(),
            "window": window,
            "start": datetime.fromtimestamp(int(epoch), tz=timezone.utc),
            "n": n,
            "n_negative": n_neg,
            "mean_score": mean,
            "weighted_score": float(conf_score) / float(conf) if conf else mean,
            "negative_share": n_neg / n,
            "volume": n / (seconds / 60),
        })
    kept, next_cursor = paginate(items, limit, lambda r: (r["start"],))
    return Page(kept, next_cursor)


def known_version(storage: Storage, version: str) -> bool:
    """Whether ``version`` is registered or has stored scores."""
    mv, s = t.model_versions, t.scores
    with storage.begin() as conn:
        if conn.execute(sa.select(mv.c.version).where(mv.c.version == version)).first():
            return True
        return conn.execute(
            sa.select(s.c.post_id).where(s.c.model_version == version).limit(1)
        ).first() is not None

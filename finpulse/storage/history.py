"""The history risk teams query (API and CLI): sentiment series, posts, alerts, acknowledgement.

Every list is a page in a fixed order with a cursor (``finpulse.storage.pages``), every
filter a bound parameter. By default posts come with their live scores and the sentiment
series is the live aggregates; ``model=VERSION`` reads that version's scores instead (shadow
and rescored ones included, ``finpulse.storage.versions``). Post text search uses PostgreSQL's full-text search
(``websearch_to_tsquery`` over title and text, English configuration); SQLite, which has
no built-in equivalent on ordinary tables, matches every word case-insensitively as a
substring instead.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from finpulse.storage import tables as t
from finpulse.storage.database import Storage, utcnow
from finpulse.storage.pages import Page, after, decode_cursor, paginate

_WORD = re.compile(r"\w+", re.UNICODE)


def sentiment_series(
    storage: Storage,
    ticker: str,
    window: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
    model: str | None = None,
) -> Page[dict[str, Any]]:
    """A ticker's window aggregates of one size, oldest window first.

    Args:
        model: compute the series from this model version's scores
            (``finpulse.storage.versions.version_series``); None: the live aggregates.

    Raises:
        ValueError: the cursor is not one this list produced.
    """
    if model is not None:
        from finpulse.storage.versions import version_series

        return version_series(storage, ticker, window, model, since=since, until=until,
                              limit=limit, cursor=cursor)
    a = t.aggregates
    query = sa.select(a).where(a.c.ticker == ticker.upper(), a.c.window_size == window)
    if since is not None:
        query = query.where(a.c.window_start >= since)
    if until is not None:
        query = query.where(a.c.window_start < until)
    if cursor is not None:
        (start,) = decode_cursor(cursor, [datetime])
        query = query.where(a.c.window_start > start)
    query = query.order_by(a.c.window_start).limit(limit + 1)
    with storage.begin() as conn:
        rows = conn.execute(query).mappings().all()
    kept, next_cursor = paginate(rows, limit, lambda r: (r["window_start"],))
    return Page(
        [
            {
                "ticker": r["ticker"],
                "window": r["window_size"],
                "start": r["window_start"],
                "n": r["n"],
                "n_negative": r["n_negative"],
                "mean_score": r["mean_score"],
                "weighted_score": r["weighted_score"],
                "negative_share": r["negative_share"],
                "volume": r["volume"],
            }
            for r in kept
        ],
        next_cursor,
    )


def _text_match(storage: Storage, q: str) -> Any:
    p = t.posts
    if storage.dialect == "postgresql":
        document = sa.func.to_tsvector(
            sa.literal_column("'english'::regconfig"),
            sa.func.coalesce(p.c.title, "") + " " + p.c.text,
        )
        query = sa.func.websearch_to_tsquery(sa.literal_column("'english'::regconfig"), q)
        return document.op("@@")(query)
    words = _WORD.findall(q.lower())
    if not words:
        return sa.false()
    haystack = sa.func.lower(sa.func.coalesce(p.c.title, "") + " " + p.c.text)
    return sa.and_(*(haystack.contains(word, autoescape=True) for word in words))


def search_posts(
    storage: Storage,
    *,
    ticker: str | None = None,
    source: str | None = None,
    label: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
    model: str | None = None,
) -> Page[dict[str, Any]]:
    """Posts with their scores, newest first: one item per (post, model version).

    Args:
        model: the scores of this model version, whatever their role (a post it never
            scored is not listed); None: the live scores.

    Raises:
        ValueError: the cursor is not one this list produced.
    """
    p, s = t.posts, t.scores
    which = s.c.role == t.LIVE if model is None else s.c.model_version == model
    query = sa.select(p, s).join(s, sa.and_(s.c.post_id == p.c.id, which))
    if ticker is not None:
        pt = t.post_tickers
        query = query.where(
            sa.exists().where(pt.c.post_id == p.c.id, pt.c.ticker == ticker.upper())
        )
    if source is not None:
        query = query.where(p.c.source == source)
    if label is not None:
        query = query.where(s.c.label == label)
    if since is not None:
        query = query.where(p.c.published_at >= since)
    if until is not None:
        query = query.where(p.c.published_at < until)
    if q is not None:
        query = query.where(_text_match(storage, q))
    key_columns = [p.c.published_at, p.c.id, s.c.model_version]
    if cursor is not None:
        query = query.where(after(key_columns, decode_cursor(cursor, [datetime, str, str]), True))
    query = query.order_by(*(c.desc() for c in key_columns)).limit(limit + 1)
    with storage.begin() as conn:
        rows = conn.execute(query).mappings().all()
    kept, next_cursor = paginate(
        rows, limit, lambda r: (r["published_at"], r["id"], r["model_version"])
    )
    return Page(
        [
            {
                "id": r["id"],
                "source": r["source"],
                "published_at": r["published_at"],
                "tickers": list(r["tickers"]),
                "title": r["title"],
                "text": r["text"],
                "url": r["url"],
                "author": r["author"],
                "label": r["label"],
                "score": r["score"],
                "confidence": r["confidence"],
                "probabilities": {
                    "negative": r["p_negative"],
                    "neutral": r["p_neutral"],
                    "positive": r["p_positive"],
                },
                "model_version": r["model_version"],
                "role": r["role"],
                "scored_at": r["scored_at"],
            }
            for r in kept
        ],
        next_cursor,
    )


def _alert_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "rule": row["rule"],
        "ticker": row["ticker"],
        "window": row["window_size"],
        "severity": row["severity"],
        "state": row["state"],
        "value": row["value"],
        "threshold": row["threshold"],
        "baseline": row["baseline"],
        "fired_at": row["fired_at"],
        "resolved_at": row["resolved_at"],
        "updated_at": row["updated_at"],
        "explanation": row["explanation"],
        "acked_by": row["acked_by"],
        "acked_at": row["acked_at"],
        "ack_comment": row["ack_comment"],
    }


def list_alerts(
    storage: Storage,
    *,
    state: str | None = None,
    ticker: str | None = None,
    rule: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    """Alerts, most recently fired first.

    Raises:
        ValueError: the cursor is not one this list produced.
    """
    al = t.alerts
    query = sa.select(al)
    if state is not None:
        query = query.where(al.c.state == state)
    if ticker is not None:
        query = query.where(al.c.ticker == ticker.upper())
    if rule is not None:
        query = query.where(al.c.rule == rule)
    if severity is not None:
        query = query.where(al.c.severity == severity)
    if since is not None:
        query = query.where(al.c.fired_at >= since)
    if cursor is not None:
        query = query.where(
            after([al.c.fired_at, al.c.id], decode_cursor(cursor, [datetime, str]), True)
        )
    query = query.order_by(al.c.fired_at.desc(), al.c.id.desc()).limit(limit + 1)
    with storage.begin() as conn:
        rows = conn.execute(query).mappings().all()
    kept, next_cursor = paginate(rows, limit, lambda r: (r["fired_at"], r["id"]))
    return Page([_alert_dict(r) for r in kept], next_cursor)


def acknowledge_alert(
    storage: Storage, alert_id: str, by: str, comment: str | None = None
) -> dict[str, Any] | None:
    """Acknowledge an alert (again: the newest acknowledgement wins); None when there is none.

    Raises:
        StorageError: the database refused or is unreachable.
    """
    al = t.alerts
    with storage.begin() as conn:
        result = conn.execute(
            sa.update(al)
            .where(al.c.id == alert_id)
            .values(acked_by=by, acked_at=utcnow(), ack_comment=comment)
        )
        if result.rowcount != 1:
            return None
        row = conn.execute(sa.select(al).where(al.c.id == alert_id)).mappings().one()
    return _alert_dict(row)

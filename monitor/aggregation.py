"""Per-ticker window aggregates (1m, 5m, 1h, 1d) over event time, computed in the database.

A window is ``[start, start + size)`` aligned to the Unix epoch in UTC, on the posts'
``published_at`` (event time), never the wall clock: a replayed stream from last year
lands in last year's windows. A post about several tickers counts once for each. Only live
scores count (``scores.role``: shadow and rescored scores never reach an aggregate). A
post scored live by several model versions counts once, with its most recent score (latest
``scored_at``, ties broken by the larger ``model_version``). ``n_unique`` counts distinct
stories: ``COUNT(DISTINCT COALESCE(posts.cluster_id, posts.id))``.

The sums are one SQL ``GROUP BY`` over time buckets (PostgreSQL and SQLite alike: the
bucket is the epoch second floored to the window size); Python only derives the mean and
standard deviation from them and upserts the rows.

Two entry points:

- ``aggregate(storage, windows)``: recompute every window (a batch run, a backtest).
- ``refresh_dirty(conn, storage, windows)``: the monitor's incremental pass. The scorer
  marks the (ticker, minute) buckets that received new scores (``dirty_windows``) in the
  transaction that stores them; this claims (deletes) the oldest markers in the caller's
  transaction and recomputes only the windows that contain them, so its cost follows new
  work, not history. A crash before the caller commits puts the markers back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from finpulse.errors import ConfigError
from finpulse.schemas import WINDOW_SECONDS
from finpulse.storage import Storage, utcnow
from finpulse.storage import tables as t
from finpulse.storage.buckets import epoch_bucket, window_start

__all__ = [
    "Refreshed", "aggregate", "aggregate_new", "check_windows", "claim_dirty", "count_dirty",
    "oldest_dirty", "refresh_dirty", "window_start",
]

logger = logging.getLogger(__name__)

# OR-ed (ticker, time range) conditions per query: keeps statements a sensible size.
_RANGES_PER_QUERY = 100
MINUTE = 60


@dataclass
class Refreshed:
    """What one incremental pass re-aggregated.

    Attributes:
        windows: per window size, the (ticker, window start) pairs recomputed.
        markers: the claimed (ticker, minute) buckets and their counts of new scores.
        rows: aggregate rows written.
    """

    windows: dict[str, set[tuple[str, datetime]]] = field(default_factory=dict)
    markers: dict[tuple[str, datetime], int] = field(default_factory=dict)
    rows: int = 0


def check_windows(windows: Sequence[str]) -> tuple[str, ...]:
    """The window sizes, deduplicated, in order.

    Raises:
        ConfigError: no size, or an unknown one.
    """
    if not windows:
        raise ConfigError("windows: at least one window size is needed", field="windows")
    for window in windows:
        if window not in WINDOW_SECONDS:
            known = ", ".join(WINDOW_SECONDS)
            raise ConfigError(
                f"windows: unknown window {window!r} (known: {known})", field="windows"
            )
    return tuple(dict.fromkeys(windows))


def _sums_query(dialect: str, seconds: int, where: Any | None) -> Any:
    """Per (ticker, bucket) sums over the latest live score of each post."""
    pt, s, p = t.post_tickers, t.scores, t.posts
    rank = sa.func.row_number().over(
        partition_by=(pt.c.ticker, pt.c.post_id),
        order_by=(s.c.scored_at.desc(), s.c.model_version.desc()),
    )
    inner = sa.select(
        pt.c.ticker, pt.c.post_id, pt.c.published_at, s.c.score, s.c.label, s.c.confidence,
        rank.label("rn"),
    ).join(s, sa.and_(s.c.post_id == pt.c.post_id, s.c.role == t.LIVE))
    if where is not None:
        inner = inner.where(where)
    latest = inner.subquery("latest")
    bucket = epoch_bucket(dialect, latest.c.published_at, seconds).label("bucket")
    negative = sa.case((latest.c.label == "negative", 1), else_=0)
    return (
        sa.select(
            latest.c.ticker,
            bucket,
            sa.func.count(),
            sa.func.sum(negative),
            sa.func.sum(latest.c.score),
            sa.func.sum(latest.c.score * latest.c.score),
            sa.func.sum(latest.c.confidence),
            sa.func.sum(latest.c.confidence * latest.c.score),
            sa.func.max(latest.c.published_at),
            sa.func.count(sa.distinct(sa.func.coalesce(p.c.cluster_id, p.c.id))),
        )
        .join(p, p.c.id == latest.c.post_id)
        .where(latest.c.rn == 1)
        .group_by(latest.c.ticker, bucket)
    )


def _row(window: str, values: Sequence[Any], now: datetime) -> dict[str, Any]:
    ticker, bucket, n, n_neg, total, total_sq, conf, conf_score, last, n_unique = values
    n, n_neg, n_unique = int(n), int(n_neg), int(n_unique)
    mean = float(total) / n
    variance = max(float(total_sq) / n - mean * mean, 0.0)
    if isinstance(last, str):  # SQLite hands back MAX() over a subquery as text
        last = datetime.fromisoformat(last)
    if last.tzinfo is None:
        last = last.replace(tzinfo=timezone.utc)
    return {
        "ticker": ticker,
        "window_size": window,
        "window_start": datetime.fromtimestamp(int(bucket), tz=timezone.utc),
        "n": n,
        "n_negative": n_neg,
        "mean_score": mean,
        "score_std": math.sqrt(variance),
        "weighted_score": float(conf_score) / float(conf) if conf else mean,
        "negative_share": n_neg / n,
        "volume": n / (WINDOW_SECONDS[window] / 60),
        "last_published_at": last.astimezone(timezone.utc),
        "updated_at": now,
        "n_unique": n_unique,
    }


def _upsert(conn: sa.Connection, storage: Storage, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = t.aggregates
    keys = [table.c.ticker, table.c.window_size, table.c.window_start]
    stmt = storage.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c not in keys},
    )
    # executemany: SQLAlchemy batches it ("insertmanyvalues") without compiling huge VALUES.
    conn.execute(stmt, rows)


def _merge(starts: Iterable[datetime], size: timedelta) -> list[tuple[datetime, datetime]]:
    """Contiguous ``[start, end)`` ranges covering the given window starts."""
    ranges: list[tuple[datetime, datetime]] = []
    for start in sorted(set(starts)):
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], start + size)
        else:
            ranges.append((start, start + size))
    return ranges


def _recompute(
    conn: sa.Connection,
    storage: Storage,
    window: str,
    keys: set[tuple[str, datetime]] | None,
    now: datetime,
) -> int:
    """Recompute the given (ticker, start) windows of one size (None: all of them)."""
    seconds = WINDOW_SECONDS[window]
    pt = t.post_tickers
    if keys is None:
        wheres: list[Any] = [None]
    else:
        by_ticker: dict[str, list[datetime]] = {}
        for ticker, start in keys:
            by_ticker.setdefault(ticker, []).append(start)
        ranges = [
            (ticker, lo, hi)
            for ticker, starts in sorted(by_ticker.items())
            for lo, hi in _merge(starts, timedelta(seconds=seconds))
        ]
        wheres = [
            sa.or_(*(
                sa.and_(pt.c.ticker == ticker, pt.c.published_at >= lo, pt.c.published_at < hi)
                for ticker, lo, hi in ranges[i : i + _RANGES_PER_QUERY]
            ))
            for i in range(0, len(ranges), _RANGES_PER_QUERY)
        ]
    written = 0
    for where in wheres:
        rows = [_row(window, values, now)
                for values in conn.execute(_sums_query(storage.dialect, seconds, where))]
        _upsert(conn, storage, rows)
        written += len(rows)
    return written


def claim_dirty(
    conn: sa.Connection, limit: int | None = None
) -> dict[tuple[str, datetime], int]:
    """Delete and return the oldest dirty (ticker, minute) markers, in the caller's transaction.

    Args:
        conn: the transaction that will also write the recomputed windows.
        limit: at most this many markers (None: all).

    Returns:
        (ticker, minute start) -> new scores in that bucket.
    """
    d = t.dirty_windows
    oldest = sa.select(d.c.ticker, d.c.minute_start).order_by(d.c.minute_start, d.c.ticker)
    if limit is not None:
        oldest = oldest.limit(limit)
    stmt = (
        sa.delete(d)
        .where(sa.tuple_(d.c.ticker, d.c.minute_start).in_(oldest.subquery().select()))
        .returning(d.c.ticker, d.c.minute_start, d.c.n)
    )
    return {(ticker, minute): int(n) for ticker, minute, n in conn.execute(stmt)}


def oldest_dirty(conn: sa.Connection) -> datetime | None:
    """The minute of the oldest marker still waiting, or None."""
    d = t.dirty_windows
    return conn.execute(sa.select(sa.func.min(d.c.minute_start))).scalar_one_or_none()


def count_dirty(conn: sa.Connection) -> int:
    """How many (ticker, minute) markers are waiting."""
    d = t.dirty_windows
    return int(conn.execute(sa.select(sa.func.count()).select_from(d)).scalar_one())


def refresh_dirty(
    conn: sa.Connection,
    storage: Storage,
    windows: Sequence[str],
    limit: int | None = None,
) -> Refreshed:
    """Claim dirty markers and recompute the windows that contain them (one transaction).

    Args:
        conn: the caller's transaction; the claim is undone if it rolls back.
        storage: the database (for dialect-specific statements).
        windows: window sizes to maintain.
        limit: claim at most this many (ticker, minute) markers, oldest first.

    Returns:
        What was recomputed; see ``Refreshed``.

    Raises:
        ConfigError: an unknown window size.
    """
    sizes = check_windows(windows)
    markers = claim_dirty(conn, limit)
    done = Refreshed(markers=markers)
    if not markers:
        return done
    now = utcnow()
    for window in sizes:
        seconds = WINDOW_SECONDS[window]
        keys = {(ticker, window_start(minute, seconds)) for ticker, minute in markers}
        done.windows[window] = keys
        done.rows += _recompute(conn, storage, window, keys, now)
    logger.debug("re-aggregated %d windows from %d dirty buckets", done.rows, len(markers))
    return done


def aggregate(storage: Storage, windows: Sequence[str] = ("1m", "5m", "1h")) -> int:
    """Recompute and upsert every window aggregate (a batch run over the whole database).

    Pending dirty markers are cleared first: everything they point at is recomputed here,
    and a score stored after the clear leaves a new marker.

    Args:
        storage: the database.
        windows: window sizes to maintain (``1m``, ``5m``, ``1h``, ``1d``).

    Returns:
        The number of aggregate rows written (inserted or updated).

    Raises:
        ConfigError: an unknown window size.
        StorageError: the database refused.
    """
    sizes = check_windows(windows)
    now = utcnow()
    written = 0
    with storage.begin() as conn:
        conn.execute(sa.delete(t.dirty_windows))
        for window in sizes:
            written += _recompute(conn, storage, window, None, now)
    logger.debug("aggregated %d windows (%s)", written, ",".join(sizes))
    return written


def aggregate_new(
    storage: Storage, windows: Sequence[str] = ("1m", "5m", "1h"), limit: int | None = None
) -> Refreshed:
    """``refresh_dirty`` in a transaction of its own.

    Raises:
        ConfigError: an unknown window size.
        StorageError: the database refused.
    """
    with storage.begin() as conn:
        return refresh_dirty(conn, storage, windows, limit)

"""Per-ticker window aggregates (1m, 5m, 1h, 1d) over event time.

A window is ``[start, start + size)`` aligned to the Unix epoch in UTC, on the posts'
``published_at`` (event time), never the wall clock: a replayed stream from last year
lands in last year's windows. A post about several tickers counts once for each. A
post scored by several model versions counts once, with its most recent score
(latest ``scored_at``).

``aggregate`` recomputes whole windows from the stored scores and upserts them, so it
can run any number of times, in any number of processes, and always converges on the
same rows. With ``since`` it only touches windows that contain a score stored at or
after ``since``; every window size nests inside the largest one requested, so those are
read in whole largest-window blocks.
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

logger = logging.getLogger(__name__)

# OR-ed (ticker, time range) conditions per query: keeps statements a sensible size.
_RANGES_PER_QUERY = 100


def window_start(ts: datetime, seconds: int) -> datetime:
    """The start of the epoch-aligned window of ``seconds`` that contains ``ts`` (UTC)."""
    epoch = math.floor(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=timezone.utc)


@dataclass
class _Window:
    """Running sums for one (ticker, window size, start)."""

    n: int = 0
    n_negative: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    conf: float = 0.0
    conf_score: float = 0.0
    last: datetime | None = None

    def add(self, score: float, label: str, confidence: float, published_at: datetime) -> None:
        self.n += 1
        self.n_negative += label == "negative"
        self.total += score
        self.total_sq += score * score
        self.conf += confidence
        self.conf_score += confidence * score
        if self.last is None or published_at > self.last:
            self.last = published_at

    def row(self, ticker: str, window: str, start: datetime, now: datetime) -> dict[str, Any]:
        mean = self.total / self.n
        variance = max(self.total_sq / self.n - mean * mean, 0.0)
        return {
            "ticker": ticker,
            "window_size": window,
            "window_start": start,
            "n": self.n,
            "n_negative": self.n_negative,
            "mean_score": mean,
            "score_std": math.sqrt(variance),
            "weighted_score": self.conf_score / self.conf if self.conf > 0 else mean,
            "negative_share": self.n_negative / self.n,
            "volume": self.n / (WINDOW_SECONDS[window] / 60),
            "last_published_at": self.last,
            "updated_at": now,
        }


@dataclass
class _Latest:
    """The most recent score of one post for one ticker."""

    key: tuple[datetime, str]
    score: float
    label: str
    confidence: float
    published_at: datetime = field(compare=False)


def _check_windows(windows: Sequence[str]) -> tuple[str, ...]:
    if not windows:
        raise ConfigError("windows: at least one window size is needed", field="windows")
    for window in windows:
        if window not in WINDOW_SECONDS:
            known = ", ".join(WINDOW_SECONDS)
            raise ConfigError(
                f"windows: unknown window {window!r} (known: {known})", field="windows"
            )
    return tuple(dict.fromkeys(windows))


def _merge_blocks(starts: Iterable[datetime], block: timedelta) -> list[tuple[datetime, datetime]]:
    """Contiguous ``[start, end)`` ranges covering the given block starts."""
    ranges: list[tuple[datetime, datetime]] = []
    for start in sorted(set(starts)):
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], start + block)
        else:
            ranges.append((start, start + block))
    return ranges


def _touched_ranges(
    conn: sa.Connection, since: datetime, block_seconds: int
) -> list[tuple[str, datetime, datetime]]:
    """(ticker, start, end) ranges of whole blocks holding a score stored at/after ``since``."""
    pt, s = t.post_tickers, t.scores
    query = (
        sa.select(pt.c.ticker, pt.c.published_at)
        .join(s, s.c.post_id == pt.c.post_id)
        .where(s.c.stored_at >= since)
        .distinct()
    )
    blocks: dict[str, set[datetime]] = {}
    for ticker, published_at in conn.execute(query):
        blocks.setdefault(ticker, set()).add(window_start(published_at, block_seconds))
    block = timedelta(seconds=block_seconds)
    return [
        (ticker, start, end)
        for ticker, starts in sorted(blocks.items())
        for start, end in _merge_blocks(starts, block)
    ]


def _read_scores(
    conn: sa.Connection, ranges: Sequence[tuple[str, datetime, datetime]] | None
) -> dict[tuple[str, str], _Latest]:
    """The latest score of every (ticker, post) in the ranges (None: everywhere)."""
    pt, s = t.post_tickers, t.scores
    base = sa.select(
        pt.c.ticker,
        pt.c.post_id,
        pt.c.published_at,
        s.c.score,
        s.c.label,
        s.c.confidence,
        s.c.scored_at,
        s.c.model_version,
    ).join(s, s.c.post_id == pt.c.post_id)
    if ranges is None:
        queries = [base]
    else:
        queries = [
            base.where(
                sa.or_(
                    *(
                        sa.and_(
                            pt.c.ticker == ticker,
                            pt.c.published_at >= start,
                            pt.c.published_at < end,
                        )
                        for ticker, start, end in ranges[i : i + _RANGES_PER_QUERY]
                    )
                )
            )
            for i in range(0, len(ranges), _RANGES_PER_QUERY)
        ]
    latest: dict[tuple[str, str], _Latest] = {}
    for query in queries:
        for (
            ticker,
            post_id,
            published_at,
            score,
            label,
            confidence,
            scored_at,
            version,
        ) in conn.execute(query):
            candidate = _Latest((scored_at, version), score, label, confidence, published_at)
            current = latest.get((ticker, post_id))
            if current is None or candidate.key > current.key:
                latest[(ticker, post_id)] = candidate
    return latest


def aggregate(
    storage: Storage,
    windows: Sequence[str] = ("1m", "5m", "1h"),
    since: datetime | None = None,
) -> int:
    """Recompute and upsert the window aggregates that new scores touched.

    Args:
        storage: the database.
        windows: window sizes to maintain (``1m``, ``5m``, ``1h``, ``1d``).
        since: only windows holding a score *stored* at or after this time (write time,
            the ``scores.stored_at`` column) are recomputed; None recomputes everything.
            A caller looping over batches passes the time it started its previous pass,
            minus a little slack for other processes' transactions still in flight.

    Returns:
        The number of aggregate rows written (inserted or updated).

    Raises:
        ConfigError: an unknown window size.
        StorageError: the database refused.
    """
    sizes = _check_windows(windows)
    block_seconds = max(WINDOW_SECONDS[w] for w in sizes)
    now = utcnow()
    with storage.begin() as conn:
        ranges = None if since is None else _touched_ranges(conn, since, block_seconds)
        if ranges == []:
            return 0
        latest = _read_scores(conn, ranges)
        sums: dict[tuple[str, str, datetime], _Window] = {}
        for (ticker, _post), score in latest.items():
            for window in sizes:
                start = window_start(score.published_at, WINDOW_SECONDS[window])
                sums.setdefault((ticker, window, start), _Window()).add(
                    score.score, score.label, score.confidence, score.published_at
                )
        rows = [
            acc.row(ticker, window, start, now)
            for (ticker, window, start), acc in sorted(sums.items())
        ]
        table = t.aggregates
        keys = [table.c.ticker, table.c.window_size, table.c.window_start]
        for i in range(0, len(rows), 500):
            stmt = storage.insert(table).values(rows[i : i + 500])
            stmt = stmt.on_conflict_do_update(
                index_elements=keys,
                set_={c.name: stmt.excluded[c.name] for c in table.columns if c not in keys},
            )
            conn.execute(stmt)
    logger.debug("aggregated %d windows (%s) since %s", len(rows), ",".join(sizes), since)
    return len(rows)

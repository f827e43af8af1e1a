"""The stream's event-time watermark, from the progress the scorers store per partition.

Each scorer batch records, per input (topic, partition), the newest ``published_at`` it
stored (capped at the time it was stored) and the wall-clock time of the write
(``partition_progress``). The watermark is the *minimum* over the partitions that are
active, so a window only closes once every partition that is still delivering data has
moved past it: partitions interleave event time, and the slowest one decides.

A partition that wrote nothing for ``idle_after`` is idle and no longer holds the others
back; when every partition is idle (the stream ended or paused) the watermark is the
maximum over all of them, so the end of a stream still closes its windows.

Without any stored progress (scores written by a batch job or a backtest on a copied
database) the watermark is the newest ``published_at`` aggregated for the window size:
the whole stored history counts as delivered.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from finpulse.storage import tables as t


def partition_watermark(
    conn: sa.Connection, now: datetime, idle_after: timedelta
) -> datetime | None:
    """The watermark over the stored partition progress, or None without any.

    Args:
        conn: an open connection.
        now: the current wall-clock time.
        idle_after: a partition silent this long no longer holds the watermark back.
    """
    pp = t.partition_progress
    rows = conn.execute(sa.select(pp.c.max_published_at, pp.c.updated_at)).all()
    if not rows:
        return None
    active = [at for at, updated in rows if updated >= now - idle_after]
    return min(active) if active else max(at for at, _ in rows)


def data_watermark(conn: sa.Connection, window: str) -> datetime | None:
    """The newest ``published_at`` aggregated in windows of one size, or None."""
    a = t.aggregates
    newest = conn.execute(
        sa.select(sa.func.max(a.c.window_start)).where(a.c.window_size == window)
    ).scalar_one_or_none()
    if newest is None:
        return None
    return conn.execute(
        sa.select(sa.func.max(a.c.last_published_at)).where(
            a.c.window_size == window, a.c.window_start >= newest
        )
    ).scalar_one()


def watermark(
    conn: sa.Connection, window: str, now: datetime, idle_after: timedelta
) -> datetime | None:
    """The event time up to which the stream is complete; see the module docstring."""
    stored = partition_watermark(conn, now, idle_after)
    return stored if stored is not None else data_watermark(conn, window)

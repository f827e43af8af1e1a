"""Epoch-aligned time buckets, in Python and in SQL (PostgreSQL and SQLite alike).

A window of ``seconds`` is ``[start, start + seconds)`` with ``start`` a multiple of
``seconds`` since the Unix epoch, in UTC. The live aggregates (``monitor.aggregation``) and
the per-version series (``finpulse.storage.versions``) bucket posts the same way.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa


def window_start(ts: datetime, seconds: int) -> datetime:
    """The start of the epoch-aligned window of ``seconds`` that contains ``ts`` (UTC)."""
    epoch = math.floor(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=timezone.utc)


def epoch_bucket(dialect: str, column: Any, seconds: int) -> Any:
    """SQL for the epoch second of the window of ``seconds`` holding ``column``."""
    if dialect == "postgresql":
        epoch = sa.func.floor(sa.extract("epoch", column) / seconds)
        return sa.cast(epoch, sa.BigInteger) * seconds
    # SQLite stores naive UTC text; strftime('%s') is its epoch second. Floor division
    # written out so times before 1970 land in the right bucket too.
    epoch = sa.cast(sa.func.strftime("%s", column), sa.Integer)
    return epoch - ((epoch % seconds) + seconds) % seconds

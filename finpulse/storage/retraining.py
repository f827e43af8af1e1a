"""The retraining job's side of the database: its run records.

A run is inserted when it starts (``decision`` NULL) and completed when it ends, so a run
whose process died stays visible as unfinished. The analysts' feedback the job learns from
is read by ``finpulse.storage.feedback.feedback_examples``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from finpulse.storage import tables as t
from finpulse.storage.database import Storage, utcnow
from finpulse.storage.pages import Page, after, decode_cursor, paginate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainRun:
    """One recorded retraining run (``decision`` is None while it runs or if it died)."""

    id: str
    started_at: datetime
    finished_at: datetime | None
    trigger: str
    champion: str
    challenger: str | None
    decision: str | None
    reason: str | None
    counts: dict[str, Any] = field(hash=False)
    gold: dict[str, Any] = field(hash=False)
    feedback: dict[str, Any] = field(hash=False)
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (times as ISO 8601)."""
        values = dict(vars(self))
        for key in ("started_at", "finished_at"):
            values[key] = values[key].isoformat() if values[key] is not None else None
        return values


def start_run(storage: Storage, *, champion: str, trigger: str) -> str:
    """Record that a run started; returns its id.

    Raises:
        StorageError: the database refused or is unreachable.
    """
    run_id = f"{utcnow():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    with storage.begin() as conn:
        conn.execute(sa.insert(t.retrain_runs).values(
            id=run_id, started_at=utcnow(), trigger=trigger, champion=champion,
            counts={}, gold={}, feedback={}))
    return run_id


def finish_run(
    storage: Storage,
    run_id: str,
    *,
    decision: str,
    reason: str,
    seconds: float,
    challenger: str | None = None,
    counts: dict[str, Any] | None = None,
    gold: dict[str, Any] | None = None,
    feedback: dict[str, Any] | None = None,
) -> None:
    """Complete a run's record with its outcome.

    Args:
        storage: the database.
        run_id: from ``start_run``.
        decision: ``promoted``, ``rejected`` or ``failed``.
        reason: why (the gate's reasons, or the error).
        seconds: the run's duration.
        challenger: the trained version, if training got that far.
        counts: examples per source.
        gold: both models' metrics on the gold set.
        feedback: both models' metrics on the held-back feedback.

    Raises:
        StorageError: the database refused or is unreachable.
    """
    values: dict[str, Any] = {"finished_at": utcnow(), "decision": decision, "reason": reason,
                              "seconds": round(seconds, 1), "challenger": challenger}
    for name, value in (("counts", counts), ("gold", gold), ("feedback", feedback)):
        if value is not None:
            values[name] = value
    with storage.begin() as conn:
        conn.execute(sa.update(t.retrain_runs).where(t.retrain_runs.c.id == run_id)
                     .values(**values))


def page_runs(
    storage: Storage,
    *,
    decision: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[RetrainRun]:
    """Recorded runs, newest first, in pages.

    Args:
        storage: the database.
        decision: only runs with this decision (``promoted``, ``rejected``, ``failed``).
        limit: the page size.
        cursor: the previous page's ``next_cursor``.

    Raises:
        ValueError: the cursor is not one this list produced.
        StorageError: the query failed.
    """
    r = t.retrain_runs
    query = sa.select(r)
    if decision is not None:
        query = query.where(r.c.decision == decision)
    if cursor is not None:
        query = query.where(after([r.c.started_at, r.c.id],
                                  decode_cursor(cursor, [datetime, str]), True))
    query = query.order_by(r.c.started_at.desc(), r.c.id.desc()).limit(limit + 1)
    with storage.begin() as conn:
        rows = conn.execute(query).mappings().all()
    kept, next_cursor = paginate(rows, limit, lambda row: (row["started_at"], row["id"]))
    return Page([RetrainRun(**dict(row)) for row in kept], next_cursor)


def list_runs(storage: Storage, limit: int = 50) -> list[RetrainRun]:
    """The newest ``limit`` recorded runs, newest first.

    Raises:
        StorageError: the query failed.
    """
    return page_runs(storage, limit=limit).items


def get_run(storage: Storage, run_id: str) -> RetrainRun | None:
    """One recorded run, or None when no run has this id.

    Raises:
        StorageError: the query failed.
    """
    with storage.begin() as conn:
        row = conn.execute(
            sa.select(t.retrain_runs).where(t.retrain_runs.c.id == run_id)
        ).mappings().first()
    return RetrainRun(**dict(row)) if row is not None else None

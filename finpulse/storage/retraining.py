"""The retraining job's side of the database: its run records.

A run is inserted when it starts (``decision`` NULL) and completed when it ends, so a run
whose process died stays visible as unfinished. ``schedule_facts`` reads what the
``--every`` schedule decides on: the newest runs and the firing model-health alerts. The analysts' feedback the job learns from
is read by ``finpulse.storage.feedback.feedback_examples``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from finpulse.storage import tables as t
from finpulse.storage.database import Storage, utcnow
from finpulse.storage.pages import Page, after, decode_cursor, paginate

logger = logging.getLogger(__name__)

# A run started early by a model-health alert records "model_health:<alert id>" as trigger.
HEALTH_TRIGGER = "model_health"


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


@dataclass(frozen=True)
class HealthAlert:
    """A firing model-health alert, as the retraining schedule sees it."""

    id: str
    fired_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ScheduleFacts:
    """What the database says about when the next retraining run is due.

    Attributes:
        last_started: when the newest run that did not fail started (a run in progress
            counts), from any process; None before the first.
        last_health_started: when the newest run a model-health alert triggered started
            (whatever its outcome); None if none has.
        used_alerts: ids of the alerts that already triggered a run.
        alerts: the firing alerts of the model-health rules, oldest first.
    """

    last_started: datetime | None
    last_health_started: datetime | None
    used_alerts: frozenset[str]
    alerts: tuple[HealthAlert, ...]


def schedule_facts(storage: Storage, health_rules: Collection[str]) -> ScheduleFacts:
    """Read the retraining schedule's facts in one transaction.

    Args:
        storage: the database.
        health_rules: the names of the model-health rules (alerts store the rule's name).

    Raises:
        StorageError: the query failed.
    """
    r, a = t.retrain_runs, t.alerts
    health = r.c.trigger.like(f"{HEALTH_TRIGGER}:%")
    with storage.begin() as conn:
        last_started = conn.execute(
            sa.select(sa.func.max(r.c.started_at))
            .where(sa.or_(r.c.decision.is_(None), r.c.decision != "failed"))
        ).scalar_one()
        last_health = conn.execute(sa.select(sa.func.max(r.c.started_at)).where(health)).scalar_one()
        triggers = conn.execute(sa.select(r.c.trigger).where(health)).scalars().all()
        alerts = conn.execute(
            sa.select(a.c.id, a.c.fired_at, a.c.updated_at)
            .where(a.c.state == "firing", a.c.rule.in_(sorted(health_rules)))
            .order_by(a.c.fired_at, a.c.id)
        ).all() if health_rules else []
    return ScheduleFacts(
        last_started=last_started,
        last_health_started=last_health,
        used_alerts=frozenset(trigger.split(":", 1)[1] for trigger in triggers),
        alerts=tuple(HealthAlert(*row) for row in alerts),
    )

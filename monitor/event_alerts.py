"""Alerts raised outside the window engine (risk events, model health): their rows and cursors.

``insert_alert`` is the one place these passes create an alert row, so whatever must
happen in the same transaction as a new alert (an outbox row for the notifier) is
added there once. The posts behind these alerts (links, copy counts, the explanation
line) are ``monitor.evidence``'s, as for window rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from finpulse.schemas import Alert
from finpulse.storage import Storage
from finpulse.storage import tables as t
from finpulse.storage.outbox import record_alert_event
from monitor.evidence import Evidence, write_posts


def insert_alert(
    conn: sa.Connection, storage: Storage, row: dict[str, Any], posts: Sequence[Evidence]
) -> bool:
    """Store a new alert and its evidence, unless an alert with its id exists.

    Args:
        conn: the pass's open transaction.
        storage: for the dialect's ``INSERT ... ON CONFLICT``.
        row: every column of ``alerts``.
        posts: the evidence, ranked.

    Returns:
        True when the alert is new (stored now), False when it already existed.
    """
    stmt = storage.insert(t.alerts).values(row).on_conflict_do_nothing().returning(t.alerts.c.id)
    if conn.execute(stmt).first() is None:
        return False
    write_posts(conn, row["id"], posts)
    record_alert_event(conn, row["id"], "fired")
    return True


def update_alert(
    conn: sa.Connection,
    alert_id: str,
    changes: dict[str, Any],
    posts: Sequence[Evidence] | None = None,
) -> None:
    """Update a firing alert's columns (and evidence, when given); subscribers hear of it."""
    conn.execute(sa.update(t.alerts).where(t.alerts.c.id == alert_id).values(**changes))
    if posts is not None:
        write_posts(conn, alert_id, posts)
    record_alert_event(conn, alert_id, "updated")


def resolve_alert(conn: sa.Connection, alert_id: str, at: datetime, now: datetime) -> None:
    """Mark a firing alert resolved at event time ``at``; subscribers hear of it."""
    conn.execute(
        sa.update(t.alerts)
        .where(t.alerts.c.id == alert_id)
        .values(state="resolved", resolved_at=at, updated_at=now)
    )
    record_alert_event(conn, alert_id, "resolved")


def firing_alerts(conn: sa.Connection, rule: str) -> dict[str, dict[str, Any]]:
    """A rule's firing alerts by ticker column (a ticker, or a source for model health)."""
    al = t.alerts
    rows = conn.execute(sa.select(al).where(al.c.rule == rule, al.c.state == "firing"))
    return {row["ticker"]: dict(row) for row in rows.mappings()}


def alert_records(storage: Storage, ids: Sequence[str]) -> list[Alert]:
    """The stored alerts with these ids, oldest first."""
    if not ids:
        return []
    with storage.begin() as conn:
        rows = (
            conn.execute(
                sa.select(t.alerts)
                .where(t.alerts.c.id.in_(list(ids)))
                .order_by(t.alerts.c.fired_at, t.alerts.c.id)
            )
            .mappings()
            .all()
        )
        return storage.alert_records(conn, rows)


def read_cursor(conn: sa.Connection, rule: str) -> datetime | None:
    """How far (``rule_cursors.closed_until``) a rule's pass has read, or None."""
    rc = t.rule_cursors
    return conn.execute(sa.select(rc.c.closed_until).where(rc.c.rule == rule)).scalar()


def save_cursor(
    conn: sa.Connection,
    storage: Storage,
    rule: str,
    *,
    window: str,
    fingerprint: str,
    until: datetime,
    now: datetime,
) -> None:
    """Store how far a rule's pass has read (never moving it backwards)."""
    rc = t.rule_cursors
    stmt = storage.insert(rc).values(
        rule=rule, window_size=window, fingerprint=fingerprint, closed_until=until, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[rc.c.rule],
        set_={
            "window_size": stmt.excluded.window_size,
            "fingerprint": stmt.excluded.fingerprint,
            "closed_until": sa.case(
                (rc.c.closed_until > stmt.excluded.closed_until, rc.c.closed_until),
                else_=stmt.excluded.closed_until,
            ),
            "updated_at": stmt.excluded.updated_at,
        },
    )
    conn.execute(stmt)

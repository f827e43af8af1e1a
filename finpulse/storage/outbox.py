"""The alert outbox and the deliveries it fans out into.

``record_alert_event`` is called by the alert evaluation inside the transaction that
creates, extends or resolves an alert, so an alert change and its notification are
stored together or not at all. The notifier then, in its own transactions:

1. ``dispatch``: turns each new event into one ``deliveries`` row per matching active
   subscription (idempotent: one row per event and subscription, whose id is derived from
   both and is the id receivers deduplicate on) and marks the event dispatched;
2. ``claim_due``: takes due deliveries (one alert's events to one subscriber in order),
   each under a lease (``next_attempt_at`` moves
   to the end of the lease and ``attempts`` counts up), so several notifiers never send
   the same delivery at once, and a notifier that dies mid-send leaves a delivery that
   comes due again when its lease lapses;
3. ``mark_delivered`` / ``mark_retry`` / ``mark_dead`` record the outcome.

An acknowledged alert gets no deliveries for its ``updated`` events (those recorded before
the acknowledgement but not yet dispatched included); ``fired`` and ``resolved`` always go.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finpulse.storage import tables as t
from finpulse.storage.database import Storage, utcnow

EventKind = Literal["fired", "updated", "resolved"]
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
# Posts of an alert carried in its event (the most negative first).
EVENT_POSTS = 5
_DELIVERY_NAMESPACE = uuid.UUID("5d0b8f8e-54f1-4c1e-9a55-2f1a4f0c7e11")


def delivery_id(event_id: int, subscription_id: str) -> str:
    """The stable id of an event's delivery to one subscription (same on every retry)."""
    return uuid.uuid5(_DELIVERY_NAMESPACE, f"{event_id}:{subscription_id}").hex


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def alert_snapshot(conn: Connection, alert_id: str) -> dict[str, Any] | None:
    """The alert and its top posts as JSON-ready dicts, or None when there is no such alert."""
    row = conn.execute(sa.select(t.alerts).where(t.alerts.c.id == alert_id)).mappings().first()
    if row is None:
        return None
    ap, p = t.alert_posts, t.posts
    posts = conn.execute(
        sa.select(p.c.id, p.c.source, p.c.url, p.c.title, p.c.text, ap.c.score)
        .join(ap, ap.c.post_id == p.c.id)
        .where(ap.c.alert_id == alert_id)
        .order_by(ap.c.rank)
        .limit(EVENT_POSTS)
    ).mappings()
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
        "fired_at": _iso(row["fired_at"]),
        "resolved_at": _iso(row["resolved_at"]),
        "explanation": row["explanation"],
        "acked_by": row["acked_by"],
        "acked_at": _iso(row["acked_at"]),
        "posts": [
            {
                "id": post["id"],
                "source": post["source"],
                "url": post["url"],
                "score": post["score"],
                "snippet": " ".join((post["title"] or post["text"]).split())[:200],
            }
            for post in posts
        ],
    }


def record_alert_event(conn: Connection, alert_id: str, kind: EventKind) -> None:
    """Store an alert event in the outbox, inside the caller's transaction.

    Args:
        conn: the connection whose transaction just created, extended or resolved the alert.
        alert_id: the alert's id.
        kind: ``fired``, ``updated`` or ``resolved``.

    Raises:
        ValueError: ``kind`` is not an event kind, or the alert does not exist (a bug in
            the caller; the transaction is then rolled back with the alert change).
    """
    if kind not in ("fired", "updated", "resolved"):
        raise ValueError(f"unknown alert event kind {kind!r}")
    snapshot = alert_snapshot(conn, alert_id)
    if snapshot is None:
        raise ValueError(f"no alert {alert_id!r} to record an event for")
    now = utcnow()
    payload = {"event": kind, "occurred_at": now.isoformat(), "alert": snapshot}
    conn.execute(
        sa.insert(t.outbox).values(
            alert_id=alert_id,
            kind=kind,
            payload=json.dumps(payload, separators=(",", ":")),
            created_at=now,
        )
    )


def matches(subscription: Any, alert: dict[str, Any]) -> bool:
    """Whether an alert (as in an event's payload) passes a subscription's filters."""
    if subscription["tickers"] and alert["ticker"] not in subscription["tickers"]:
        return False
    if subscription["rules"] and alert["rule"] not in subscription["rules"]:
        return False
    if SEVERITY_RANK.get(alert["severity"], 0) < SEVERITY_RANK[subscription["min_severity"]]:
        return False
    if subscription["sources"]:
        sources = {post.get("source") for post in alert.get("posts", [])}
        if not sources & set(subscription["sources"]):
            return False
    return True


def dispatch(storage: Storage, limit: int = 200) -> int:
    """Fan undispatched events out into deliveries; returns how many events were dispatched.

    Raises:
        StorageError: the database refused or is unreachable (nothing is marked then).
    """
    o, s, d = t.outbox, t.subscriptions, t.deliveries
    now = utcnow()
    with storage.begin() as conn:
        events = conn.execute(
            sa.select(o.c.id, o.c.alert_id, o.c.kind, o.c.payload, o.c.created_at)
            .where(o.c.dispatched_at.is_(None))
            .order_by(o.c.id)
            .limit(limit)
        ).all()
        if not events:
            return 0
        subs = conn.execute(
            sa.select(s).where(s.c.active.is_(True), s.c.deleted_at.is_(None))
        ).mappings().all()
        acked = set()
        updated = [e.alert_id for e in events if e.kind == "updated"]
        if updated:
            acked = set(
                conn.execute(
                    sa.select(t.alerts.c.id).where(
                        t.alerts.c.id.in_(updated), t.alerts.c.acked_at.is_not(None)
                    )
                ).scalars()
            )
        rows = []
        for event in events:
            if event.kind == "updated" and event.alert_id in acked:
                continue
            alert = json.loads(event.payload)["alert"]
            for sub in subs:
                if matches(sub, alert):
                    rows.append(
                        {
                            "id": delivery_id(event.id, sub["id"]),
                            "event_id": event.id,
                            "subscription_id": sub["id"],
                            "alert_id": event.alert_id,
                            "kind": event.kind,
                            "channel": sub["channel"],
                            "status": "pending",
                            "attempts": 0,
                            "next_attempt_at": now,
                            "event_at": event.created_at,
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
        for i in range(0, len(rows), 500):
            conn.execute(storage.insert(d).values(rows[i : i + 500]).on_conflict_do_nothing())
        conn.execute(
            sa.update(o)
            .where(o.c.id.in_([e.id for e in events]), o.c.dispatched_at.is_(None))
            .values(dispatched_at=now)
        )
    return len(events)


@dataclass(frozen=True)
class Delivery:
    """One claimed delivery: what to send, to whom, and how often it was tried."""

    id: str
    event_id: int
    alert_id: str
    kind: str
    channel: str
    target: str
    secret: str | None
    subscription_id: str
    subscription_name: str
    attempts: int
    event_at: datetime
    payload: dict[str, Any]

    def body(self) -> dict[str, Any]:
        """The JSON document receivers get: the event plus the ids to deduplicate on."""
        return {
            "delivery_id": self.id,
            "subscription_id": self.subscription_id,
            **self.payload,
        }


def claim_due(
    storage: Storage, limit: int, lease: timedelta, exclude: Collection[str] = ()
) -> list[Delivery]:
    """Claim up to ``limit`` due deliveries for ``lease``; see the module docstring.

    Args:
        storage: the database.
        limit: the most deliveries to claim.
        lease: how long each claim holds before another notifier may take the delivery.
        exclude: ids this notifier is still sending (their lease may have lapsed).

    Deliveries of removed subscriptions are marked dead instead (never silently dropped);
    those of paused (inactive) subscriptions wait.

    Raises:
        StorageError: the database refused or is unreachable.
    """
    d, s, o = t.deliveries, t.subscriptions, t.outbox
    now = utcnow()
    claimed: list[Delivery] = []
    # Events of one alert reach one subscriber in order: a delivery waits while an earlier
    # one of the same alert to the same subscription is still pending (or in flight).
    earlier = d.alias("earlier")
    in_order = ~sa.exists().where(
        earlier.c.subscription_id == d.c.subscription_id,
        earlier.c.alert_id == d.c.alert_id,
        earlier.c.status == "pending",
        earlier.c.event_id < d.c.event_id,
    )
    with storage.begin() as conn:
        rows = conn.execute(
            sa.select(d, s.c.target, s.c.secret, s.c.name, s.c.active, s.c.deleted_at, o.c.payload)
            .join(s, s.c.id == d.c.subscription_id)
            .join(o, o.c.id == d.c.event_id)
            .where(d.c.status == "pending", d.c.next_attempt_at <= now)
            .where(sa.or_(s.c.active.is_(True), s.c.deleted_at.is_not(None)), in_order)
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(limit + len(exclude))
        ).mappings().all()
        for row in rows:
            if row["id"] in exclude or len(claimed) >= limit:
                continue
            if row["deleted_at"] is not None:
                conn.execute(
                    sa.update(d)
                    .where(d.c.id == row["id"], d.c.status == "pending")
                    .values(status="dead", last_error="subscription removed", updated_at=now)
                )
                continue
            result = conn.execute(
                sa.update(d)
                .where(
                    d.c.id == row["id"],
                    d.c.status == "pending",
                    d.c.next_attempt_at == row["next_attempt_at"],
                )
                .values(
                    next_attempt_at=now + lease,
                    attempts=d.c.attempts + 1,
                    updated_at=now,
                )
            )
            if result.rowcount != 1:
                continue  # another notifier claimed it first
            claimed.append(
                Delivery(
                    id=row["id"],
                    event_id=row["event_id"],
                    alert_id=row["alert_id"],
                    kind=row["kind"],
                    channel=row["channel"],
                    target=row["target"],
                    secret=row["secret"],
                    subscription_id=row["subscription_id"],
                    subscription_name=row["name"],
                    attempts=row["attempts"] + 1,
                    event_at=row["event_at"],
                    payload=json.loads(row["payload"]),
                )
            )
    return claimed


def mark_delivered(storage: Storage, ident: str) -> None:
    """Record a delivery the receiver acknowledged."""
    now = utcnow()
    with storage.begin() as conn:
        conn.execute(
            sa.update(t.deliveries)
            .where(t.deliveries.c.id == ident)
            .values(status="delivered", delivered_at=now, updated_at=now, last_error=None)
        )


def mark_retry(storage: Storage, ident: str, error: str, due: datetime) -> None:
    """Record a failed attempt; the delivery comes due again at ``due``."""
    with storage.begin() as conn:
        conn.execute(
            sa.update(t.deliveries)
            .where(t.deliveries.c.id == ident, t.deliveries.c.status == "pending")
            .values(next_attempt_at=due, last_error=error[:2000], updated_at=utcnow())
        )


def mark_dead(storage: Storage, ident: str, error: str) -> None:
    """Record a delivery that will not be attempted again."""
    with storage.begin() as conn:
        conn.execute(
            sa.update(t.deliveries)
            .where(t.deliveries.c.id == ident, t.deliveries.c.status == "pending")
            .values(status="dead", last_error=error[:2000], updated_at=utcnow())
        )


def pending_count(storage: Storage) -> int:
    """Events not yet dispatched plus deliveries neither delivered nor dead."""
    with storage.begin() as conn:
        events = conn.execute(
            sa.select(sa.func.count()).where(t.outbox.c.dispatched_at.is_(None))
        ).scalar_one()
        deliveries = conn.execute(
            sa.select(sa.func.count()).where(t.deliveries.c.status == "pending")
        ).scalar_one()
    return int(events) + int(deliveries)


def redeliver(storage: Storage, ident: str) -> bool:
    """Put a dead delivery back in the queue (same id); returns whether one was found."""
    now = utcnow()
    with storage.begin() as conn:
        result = conn.execute(
            sa.update(t.deliveries)
            .where(t.deliveries.c.id == ident, t.deliveries.c.status == "dead")
            .values(status="pending", attempts=0, next_attempt_at=now, updated_at=now)
        )
    return result.rowcount == 1

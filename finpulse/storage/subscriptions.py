"""Subscriptions: who receives which alert events, on which channel.

A subscription's filters (tickers, rules, sources) are lists; an empty list matches
everything. Webhook subscriptions get a random secret when none is given:
the notifier signs each webhook body with it (``X-Finpulse-Signature``). Removing a
subscription keeps its row (its deliveries stay readable) and stops it matching.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from finpulse.storage import tables as t
from finpulse.storage.database import Storage, utcnow
from finpulse.storage.pages import Page, after, decode_cursor, paginate

Channel = Literal["webhook", "email", "slack", "kafka"]
CHANNELS: tuple[str, ...] = ("webhook", "email", "slack", "kafka")
DEFAULT_ALERTS_TOPIC = "finpulse.alerts"


def _public(row: Any, *, with_secret: bool = False) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "name": row["name"],
        "channel": row["channel"],
        "target": row["target"],
        "tickers": list(row["tickers"]),
        "rules": list(row["rules"]),
        "sources": list(row["sources"]),
        "min_severity": row["min_severity"],
        "active": bool(row["active"]),
        "created_at": row["created_at"],
    }
    if with_secret:
        out["secret"] = row["secret"]
    return out


def create_subscription(
    storage: Storage,
    *,
    channel: str,
    target: str | None,
    name: str | None = None,
    tickers: Sequence[str] = (),
    rules: Sequence[str] = (),
    sources: Sequence[str] = (),
    min_severity: str = "info",
    secret: str | None = None,
    active: bool = True,
) -> dict[str, Any]:
    """Store a new subscription and return it, with its secret (shown this once).

    Raises:
        ValueError: an unknown channel or severity, or a missing target (the message
            names the field).
        StorageError: the database refused or is unreachable.
    """
    if channel not in CHANNELS:
        raise ValueError(f"channel: must be one of {', '.join(CHANNELS)}")
    if min_severity not in ("info", "warning", "critical"):
        raise ValueError("min_severity: must be info, warning or critical")
    if channel == "kafka" and not target:
        target = DEFAULT_ALERTS_TOPIC
    if not target:
        raise ValueError(f"target: a {channel} subscription needs a target")
    if channel in ("webhook", "slack") and not target.startswith(("http://", "https://")):
        raise ValueError("target: must be an http:// or https:// URL")
    if channel == "email" and "@" not in target:
        raise ValueError("target: must be an e-mail address")
    if channel == "webhook" and secret is None:
        secret = secrets.token_urlsafe(32)
    ident = secrets.token_hex(8)
    row = {
        "id": ident,
        "name": name or f"{channel}-{ident[:6]}",
        "channel": channel,
        "target": target,
        "tickers": sorted({x.upper() for x in tickers}),
        "rules": sorted(set(rules)),
        "sources": sorted(set(sources)),
        "min_severity": min_severity,
        "secret": secret,
        "active": active,
        "created_at": utcnow(),
    }
    with storage.begin() as conn:
        conn.execute(sa.insert(t.subscriptions).values(row))
    return _public(row, with_secret=True)


def list_subscriptions(
    storage: Storage, *, limit: int = 100, cursor: str | None = None
) -> Page[dict[str, Any]]:
    """Subscriptions not removed, newest first.

    Raises:
        ValueError: the cursor is not one this list produced.
    """
    s = t.subscriptions
    query = sa.select(s).where(s.c.deleted_at.is_(None))
    if cursor is not None:
        query = query.where(after([s.c.created_at, s.c.id], decode_cursor(cursor, [datetime, str]), True))
    query = query.order_by(s.c.created_at.desc(), s.c.id.desc()).limit(limit + 1)
    with storage.begin() as conn:
        rows = conn.execute(query).mappings().all()
    kept, next_cursor = paginate(rows, limit, lambda r: (r["created_at"], r["id"]))
    return Page([_public(r) for r in kept], next_cursor)


def remove_subscription(storage: Storage, ident: str) -> bool:
    """Remove a subscription (it stops matching; pending deliveries go dead)."""
    s = t.subscriptions
    with storage.begin() as conn:
        result = conn.execute(
            sa.update(s)
            .where(s.c.id == ident, s.c.deleted_at.is_(None))
            .values(deleted_at=utcnow(), active=False)
        )
    return result.rowcount == 1


def list_deliveries(
    storage: Storage,
    *,
    status: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    """Deliveries, most recently created first, optionally of one status.

    Raises:
        ValueError: the cursor is not one this list produced.
    """
    d, s = t.deliveries, t.subscriptions
    query = sa.select(d, s.c.name.label("subscription_name"), s.c.target).join(
        s, s.c.id == d.c.subscription_id
    )
    if status is not None:
        query = query.where(d.c.status == status)
    if cursor is not None:
        query = query.where(after([d.c.created_at, d.c.id], decode_cursor(cursor, [datetime, str]), True))
    query = query.order_by(d.c.created_at.desc(), d.c.id.desc()).limit(limit + 1)
    with storage.begin() as conn:
        rows = conn.execute(query).mappings().all()
    kept, next_cursor = paginate(rows, limit, lambda r: (r["created_at"], r["id"]))
    fields = ("id", "subscription_id", "subscription_name", "channel", "target", "alert_id",
              "kind", "status", "attempts", "last_error", "event_at", "created_at",
              "delivered_at")
    return Page([{f: r[f] for f in fields} for r in kept], next_cursor)

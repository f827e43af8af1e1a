"""Alerts raised outside the window engine (risk events, model health): rows and evidence.

``insert_alert`` is the one place these passes create an alert row, so whatever must
happen in the same transaction as a new alert (an outbox row for the notifier) is
added there once. Evidence posts carry their link (``posts.url``) and how many times
their story was published (its near-duplicate cluster's size), e.g.::

    risk_event on ACME: ... | evidence: p-17 (-0.91) "Acme probed for fraud" <https://...> [3 copies]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from finpulse.schemas import Alert
from finpulse.storage import Storage
from finpulse.storage import tables as t
from finpulse.storage.outbox import record_alert_event

EVIDENCE_SEPARATOR = " | evidence: "
SNIPPET_CHARS = 80


class EvidencePost(NamedTuple):
    """One post behind an alert, as shown to people."""

    post_id: str
    score: float
    snippet: str
    url: str | None
    copies: int  # posts of the same story (its cluster), this one included


def snippet(text: str) -> str:
    """The text on one line, cut to ``SNIPPET_CHARS``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


def cluster_key() -> Any:
    """SQL for a post's story: its cluster id, or its own id when it has none."""
    return sa.func.coalesce(t.posts.c.cluster_id, t.posts.c.id)


def cluster_sizes(conn: sa.Connection, keys: Iterable[str]) -> dict[str, int]:
    """How many stored posts each story (cluster key) has.

    Args:
        conn: an open connection.
        keys: cluster keys (``cluster_id``, or a post id for an unclustered post).

    Returns:
        key -> number of posts (at least 1 for a key that names a stored post).
    """
    wanted = sorted(set(keys))
    sizes = dict.fromkeys(wanted, 1)
    p = t.posts
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        rows = conn.execute(
            sa.select(p.c.cluster_id, sa.func.count())
            .where(p.c.cluster_id.in_(chunk))
            .group_by(p.c.cluster_id)
        )
        for key, count in rows:
            sizes[key] = max(int(count), 1)
    return sizes


def evidence_for(
    conn: sa.Connection, posts: Sequence[tuple[str, float]]
) -> list[EvidencePost]:
    """Links, snippets and copy counts for ``(post id, score)`` pairs, in the given order."""
    if not posts:
        return []
    p = t.posts
    ids = [post_id for post_id, _ in posts]
    rows = {
        row.id: row
        for row in conn.execute(
            sa.select(p.c.id, p.c.title, p.c.text, p.c.url, cluster_key().label("story")).where(
                p.c.id.in_(ids)
            )
        )
    }
    sizes = cluster_sizes(conn, (row.story for row in rows.values()))
    out = []
    for post_id, score in posts:
        row = rows.get(post_id)
        if row is None:
            continue
        out.append(
            EvidencePost(post_id, score, snippet(row.title or row.text), row.url, sizes[row.story])
        )
    return out


def explain(summary: str, posts: Sequence[EvidencePost]) -> str:
    """The explanation line: the summary in words, then each post with link and copies."""
    listed = "; ".join(
        f'{e.post_id} ({e.score:+.2f}) "{e.snippet}"'
        + (f" <{e.url}>" if e.url else "")
        + (f" [{e.copies} copies]" if e.copies > 1 else "")
        for e in posts
    )
    return f"{summary}{EVIDENCE_SEPARATOR}{listed}" if posts else summary


def write_posts(conn: sa.Connection, alert_id: str, posts: Sequence[EvidencePost]) -> None:
    """Replace an alert's recorded posts with ``posts`` (rank 1 first)."""
    ap = t.alert_posts
    conn.execute(sa.delete(ap).where(ap.c.alert_id == alert_id))
    if posts:
        conn.execute(
            sa.insert(ap),
            [
                {"alert_id": alert_id, "post_id": e.post_id, "rank": i, "score": e.score}
                for i, e in enumerate(posts, 1)
            ],
        )


def insert_alert(
    conn: sa.Connection, storage: Storage, row: dict[str, Any], posts: Sequence[EvidencePost]
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
    posts: Sequence[EvidencePost] | None = None,
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

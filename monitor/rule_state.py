"""What a rule remembers per ticker between passes, and where it is stored.

``Machine`` is one (rule, ticker)'s state: the detector's baseline, the alert firing now
(if any) and when the last one resolved. It is stored in ``rule_baselines`` with
``next_start``, the first window not judged yet (per-ticker progress: one ticker's clock
never moves another's). Before each window is judged the machine is also written to
``rule_snapshots``; a late post re-opens its window, and the rule replays from the
snapshot taken just before it. Snapshots older than the allowed lateness are pruned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from finpulse.storage import Storage
from finpulse.storage import tables as t

# The alert fields a machine restores when a rewind re-opens a firing alert.
_FIRING_FIELDS = ("id", "window_start", "last_window_start", "value", "threshold", "baseline",
                  "explanation")
_CHUNK = 500


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass
class Machine:
    """One (rule, ticker): baseline, firing alert (a dict of alert columns), last resolution."""

    detector: dict[str, Any] | None = None
    firing: dict[str, Any] | None = None
    last_resolved: datetime | None = None
    next_start: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        firing = None
        if self.firing is not None:
            firing = {k: self.firing[k] for k in _FIRING_FIELDS}
            for k in ("window_start", "last_window_start"):
                firing[k] = _iso(firing[k])
        return {"detector": self.detector, "firing": firing,
                "last_resolved": _iso(self.last_resolved)}

    @classmethod
    def from_json(cls, data: dict[str, Any], next_start: datetime | None) -> Machine:
        firing = data.get("firing")
        if firing is not None:
            firing = dict(firing)
            for k in ("window_start", "last_window_start"):
                firing[k] = _time(firing[k])
        return cls(data.get("detector"), firing, _time(data.get("last_resolved")), next_start)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def load_machines(conn: sa.Connection, rule: str, tickers: Iterable[str]) -> dict[str, Machine]:
    """The stored machines of ``tickers``; a ticker never judged starts from its alerts."""
    rb, al = t.rule_baselines, t.alerts
    wanted = sorted(set(tickers))
    out: dict[str, Machine] = {}
    for chunk in _chunks(wanted):
        rows = conn.execute(
            sa.select(rb.c.ticker, rb.c.state, rb.c.next_start)
            .where(rb.c.rule == rule, rb.c.ticker.in_(chunk))
        )
        for ticker, state, next_start in rows:
            out[ticker] = Machine.from_json(state, next_start)
    fresh = [ticker for ticker in wanted if ticker not in out]
    for chunk in _chunks(fresh):
        for ticker in chunk:
            out[ticker] = Machine()
        firing = conn.execute(
            sa.select(al).where(al.c.rule == rule, al.c.state == "firing", al.c.ticker.in_(chunk))
        )
        for row in firing.mappings():
            out[row["ticker"]].firing = dict(row)
        resolved = conn.execute(
            sa.select(al.c.ticker, sa.func.max(al.c.resolved_at))
            .where(al.c.rule == rule, al.c.state == "resolved", al.c.ticker.in_(chunk))
            .group_by(al.c.ticker)
        )
        for ticker, at in resolved:
            out[ticker].last_resolved = at
    return out


def save_machines(
    conn: sa.Connection, storage: Storage, rule: str, machines: dict[str, Machine],
    now: datetime,
) -> None:
    """Upsert the machines of one rule."""
    rb = t.rule_baselines
    rows = [
        {"rule": rule, "ticker": ticker, "state": m.to_json(), "updated_at": now,
         "next_start": m.next_start}
        for ticker, m in sorted(machines.items())
    ]
    if not rows:
        return
    stmt = storage.insert(rb)
    stmt = stmt.on_conflict_do_update(
        index_elements=[rb.c.rule, rb.c.ticker],
        set_={c: stmt.excluded[c] for c in ("state", "updated_at", "next_start")},
    )
    conn.execute(stmt, rows)


def save_snapshots(
    conn: sa.Connection, storage: Storage, rule: str,
    snapshots: list[tuple[str, datetime, dict[str, Any]]],
) -> None:
    """Upsert (ticker, window start, state before the window) snapshots."""
    rs = t.rule_snapshots
    rows = [{"rule": rule, "ticker": tk, "window_start": at, "state": st}
            for tk, at, st in snapshots]
    if not rows:
        return
    stmt = storage.insert(rs)
    stmt = stmt.on_conflict_do_update(
        index_elements=[rs.c.rule, rs.c.ticker, rs.c.window_start],
        set_={"state": stmt.excluded.state},
    )
    conn.execute(stmt, rows)


def snapshot_from(
    conn: sa.Connection, rule: str, ticker: str, start: datetime
) -> tuple[datetime, dict[str, Any]] | None:
    """The earliest snapshot at or after ``start``: the state after every window before it."""
    rs = t.rule_snapshots
    return conn.execute(
        sa.select(rs.c.window_start, rs.c.state)
        .where(rs.c.rule == rule, rs.c.ticker == ticker, rs.c.window_start >= start)
        .order_by(rs.c.window_start)
        .limit(1)
    ).first()  # type: ignore[return-value]


def prune_snapshots(conn: sa.Connection, rule: str, horizons: dict[str, datetime]) -> None:
    """Drop each ticker's snapshots before its horizon (no longer re-openable)."""
    rs = t.rule_snapshots
    for ticker, horizon in horizons.items():
        conn.execute(
            sa.delete(rs).where(rs.c.rule == rule, rs.c.ticker == ticker,
                                rs.c.window_start < horizon)
        )


def drop_snapshots(conn: sa.Connection, rule: str, ticker: str, start: datetime) -> None:
    """Drop one ticker's snapshots from ``start`` on (a rewind is about to rewrite them)."""
    rs = t.rule_snapshots
    conn.execute(sa.delete(rs).where(rs.c.rule == rule, rs.c.ticker == ticker,
                                     rs.c.window_start >= start))


def forget(conn: sa.Connection, rule: str) -> None:
    """Drop a rule's per-ticker state (its baseline definition changed)."""
    conn.execute(sa.delete(t.rule_baselines).where(t.rule_baselines.c.rule == rule))
    conn.execute(sa.delete(t.rule_snapshots).where(t.rule_snapshots.c.rule == rule))

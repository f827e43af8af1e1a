"""One pass of the alert rules over the windows that closed or were re-opened.

Event time drives everything, and progress is kept per (rule, ticker) in the database:

- The *watermark* (``monitor.watermark``) is the minimum event time over the input
  partitions still delivering data. A window is *closed* once the watermark passes its end
  by the rule's ``lateness``; each rule's ``closed_until`` only moves forward, and while
  dirty buckets wait to be re-aggregated, windows from the oldest on stay open.
- Each (rule, ticker) judges its closed windows exactly once, in order, from its own
  cursor (``rule_baselines.next_start``): a post dated 2099 moves only its own ticker.
- A *late* post re-opens its window: the window is re-aggregated, and if a rule had
  already judged it the rule rewinds that ticker to the snapshot taken just before the
  window (``rule_snapshots``) and replays its windows up to ``closed_until``. So the
  alerts of a live run equal those of one batch pass over the same data. A post later
  than ``allowed_lateness`` (behind the ticker's own cursor) still updates the aggregates
  but is judged no more.
- An alert resolved because no window met the condition for ``resolve_after`` counts the
  silent stretch as judged; a window inside it that arrives later rewinds the same way.
- No early firing: an open window is never judged. Firing on part of a window would make
  the alerts depend on when the passes ran (a live run would differ from a batch run) and
  could fire on a window that, once complete, does not meet the condition. The price is
  latency: an alert comes once its window closes (window size + ``lateness``).

The rule's cursor row is locked for the pass (PostgreSQL ``FOR UPDATE``) and only moves
if no other process moved it first, so several monitors can run side by side.
``evaluate`` returns the alerts that did not exist before the call; a second call over
the same data returns ``[]``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from finpulse.schemas import WINDOW_SECONDS, Alert
from finpulse.storage import Storage, utcnow
from finpulse.storage import tables as t
from monitor.aggregation import Refreshed, oldest_dirty, window_start
from monitor.alerting import RuleRun
from monitor.detectors import WindowStats
from monitor.rule_state import (
    Machine,
    drop_snapshots,
    forget,
    load_machines,
    prune_snapshots,
    save_machines,
    save_snapshots,
    snapshot_from,
)
from monitor.rules import RuleSet
from monitor.watermark import watermark

logger = logging.getLogger(__name__)

# Bumped when the stored per-ticker state changes shape: a mismatch rebuilds it.
_STATE_VERSION = "2"
_RANGES_PER_QUERY = 100
_TICK = timedelta(microseconds=1)


class CursorMoved(Exception):
    """Another process evaluated the same windows first; this run's work is dropped."""


@dataclass(frozen=True)
class EventTime:
    """How the monitor treats event time.

    Attributes:
        allowed_lateness: a post re-opens its window only if the window ended less than
            this before its ticker's cursor; later ones are stored but judged no more.
        idle_after: a partition silent this long (wall clock) stops holding the
            watermark back.
    """

    allowed_lateness: timedelta = timedelta(hours=6)
    idle_after: timedelta = timedelta(seconds=60)


@dataclass
class Judged:
    """What one evaluation pass did.

    Attributes:
        new_ids: alerts fired for the first time.
        resolved: alerts resolved, per rule.
        late: per window size, (ticker, window start) -> ``rejudged`` or ``too_late``.
    """

    new_ids: list[str] = field(default_factory=list)
    resolved: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    late: dict[str, dict[tuple[str, datetime], str]] = field(
        default_factory=lambda: defaultdict(dict)
    )




class RulePass(RuleRun):
    """One evaluation pass of one rule: which windows to judge, rewinds, the saved state."""

    def _windows(self, spans: dict[str, datetime | None], until: datetime) -> dict[str, list[WindowStats]]:
        """Each ticker's windows from its span start (None: all) up to ``until``, in order."""
        a = t.aggregates
        conds = [
            sa.and_(a.c.ticker == ticker, a.c.window_start >= start)
            if start is not None else a.c.ticker == ticker
            for ticker, start in sorted(spans.items(), key=lambda kv: kv[0])
        ]
        out: dict[str, list[WindowStats]] = defaultdict(list)
        for i in range(0, len(conds), _RANGES_PER_QUERY):
            query = (
                sa.select(a.c.ticker, a.c.window_start, a.c.n, a.c.n_negative, a.c.mean_score,
                          a.c.score_std, a.c.last_published_at, a.c.n_unique)
                .where(a.c.window_size == self.rule.window, a.c.window_start < until,
                       sa.or_(*conds[i : i + _RANGES_PER_QUERY]))
                .order_by(a.c.ticker, a.c.window_start)
            )
            for row in self.conn.execute(query):
                out[row[0]].append(WindowStats(*row))
        return out

    # ---- writing: one function per alert transition ----------------------------------------


    def _rewind(self, ticker: str, reopened: list[datetime]) -> datetime | None:
        """Go back to before the earliest re-openable window; return where to replay from."""
        machine = self.machines[ticker]
        late = self.judged.late[self.rule.window]
        assert machine.next_start is not None
        horizon = machine.next_start - self.size - self.event_time.allowed_lateness
        allowed = sorted(start for start in reopened if start > horizon)
        for start in reopened:
            if start <= horizon:
                late.setdefault((ticker, start), "too_late")
        if not allowed:
            return None
        found = snapshot_from(self.conn, self.rule.name, ticker, allowed[0])
        if found is None:  # nothing judged at or after it: a plain advance
            return None
        for start in allowed:
            late[(ticker, start)] = "rejudged"
        drop_snapshots(self.conn, self.rule.name, ticker, allowed[0])  # the replay rewrites them
        al = t.alerts
        rows = self.conn.execute(
            sa.select(al).where(al.c.rule == self.rule.name, al.c.ticker == ticker,
                                al.c.window_start >= allowed[0])
        )
        self.replayed.update({row["id"]: dict(row) for row in rows.mappings()})
        restored = Machine.from_json(found[1], machine.next_start)
        self.machines[ticker] = restored
        if restored.firing is not None:
            self._reopen(ticker)
        return allowed[0]


    def run(self, reopened: set[tuple[str, datetime]], hold: datetime | None) -> None:
        """Judge newly closed and re-opened windows; see the module docstring.

        Raises:
            CursorMoved: another process judged the same windows first.
        """
        rule, a, rc = self.rule, t.aggregates, t.rule_cursors
        cursor = (
            self.conn.execute(sa.select(rc).where(rc.c.rule == rule.name).with_for_update())
            .mappings()
            .first()
        )
        mark = watermark(self.conn, rule.window, self.now, self.event_time.idle_after)
        if mark is None:
            return
        seconds = WINDOW_SECONDS[rule.window]
        closed_until = window_start(mark - rule.lateness, seconds)
        if hold is not None:  # scores stored but not aggregated yet: do not close past them
            closed_until = min(closed_until, window_start(hold, seconds))
        stream_start = self.conn.execute(
            sa.select(sa.func.min(a.c.window_start)).where(a.c.window_size == rule.window)
        ).scalar_one()
        if stream_start is None:
            return
        fingerprint = f"{_STATE_VERSION}:{rule.fingerprint()}"
        alert_from: datetime | None = None
        previous: datetime | None = None
        if cursor is not None and cursor["fingerprint"] == fingerprint:
            previous = cursor["closed_until"]
            closed_until = max(closed_until, previous)
        else:
            # First run, or the baseline's definition changed: rebuild it from all history,
            # but only alert on windows the previous configuration had not judged yet.
            alert_from = cursor["closed_until"] if cursor is not None else None
            forget(self.conn, rule.name)

        # Tickers with work: windows newly closed, windows re-opened, alerts gone stale.
        where = [a.c.window_size == rule.window, a.c.window_start < closed_until]
        if previous is not None:
            where.append(a.c.window_start >= previous)
        newly = dict(self.conn.execute(
            sa.select(a.c.ticker, sa.func.min(a.c.window_start)).where(*where).group_by(a.c.ticker)
        ).all())
        late: dict[str, list[datetime]] = defaultdict(list)
        for ticker, start in reopened:
            if start < closed_until:
                late[ticker].append(start)
        al = t.alerts
        firing = self.conn.execute(
            sa.select(al.c.ticker).where(al.c.rule == rule.name, al.c.state == "firing")
        ).scalars().all()
        self.machines = load_machines(self.conn, rule.name, {*newly, *late, *firing})

        spans: dict[str, datetime | None] = {}
        for ticker, machine in self.machines.items():
            start = machine.next_start
            if start is not None and late.get(ticker) and min(late[ticker]) < start:
                start = self._rewind(ticker, late[ticker]) or start
            if ticker in newly or ticker in late:
                spans[ticker] = start
        for ticker, windows in self._windows(spans, closed_until).items():
            self._close(ticker, windows, stream_start, alert_from)
        for ticker, machine in self.machines.items():
            if machine.firing is not None and self._stale_until(machine.firing) <= closed_until:
                # No window of this ticker met the condition up to the stale time: resolve, and
                # count the silent stretch as judged. A window inside it that arrives later is a
                # late window: the rule rewinds to the snapshot taken here and replays it.
                stale = self._stale_until(machine.firing)
                # Keyed just before the stale time: a window starting exactly there snapshots
                # the state before its own verdict (which would resolve the same alert).
                self.snapshots.append((ticker, stale - _TICK, machine.to_json()))
                self._resolve(ticker, stale)
                machine.next_start = max(machine.next_start or stale, stale)
        self._retract()
        self._save(cursor, closed_until, fingerprint)


    def _save(self, cursor: Any, closed_until: datetime, fingerprint: str) -> None:
        keep = self.size + self.event_time.allowed_lateness
        horizons = {ticker: m.next_start - keep
                    for ticker, m in self.machines.items() if m.next_start is not None}
        # Only snapshots a late post could still re-open are worth writing.
        snapshots = [s for s in self.snapshots if s[0] not in horizons or s[1] >= horizons[s[0]]]
        save_snapshots(self.conn, self.storage, self.rule.name, snapshots)
        save_machines(self.conn, self.storage, self.rule.name, self.machines, self.now)
        prune_snapshots(self.conn, self.rule.name, horizons)
        rc = t.rule_cursors
        values = {
            "window_size": self.rule.window,
            "fingerprint": fingerprint,
            "closed_until": closed_until,
            "updated_at": self.now,
        }
        if cursor is None:
            stmt = (
                self.storage.insert(rc)
                .values(rule=self.rule.name, **values)
                .on_conflict_do_nothing()
                .returning(rc.c.rule)
            )
            moved = self.conn.execute(stmt).first() is None
        else:
            result = self.conn.execute(
                sa.update(rc)
                .where(
                    rc.c.rule == self.rule.name,
                    rc.c.closed_until == cursor["closed_until"],
                    rc.c.fingerprint == cursor["fingerprint"],
                )
                .values(**values)
            )
            moved = result.rowcount != 1
        if moved:
            raise CursorMoved(self.rule.name)



def judge(
    conn: sa.Connection,
    storage: Storage,
    rules: RuleSet,
    *,
    refreshed: Refreshed | None = None,
    event_time: EventTime = EventTime(),
) -> Judged:
    """Evaluate every enabled rule in the caller's transaction.

    Args:
        conn: the transaction (the monitor's pass: the same one that re-aggregated).
        storage: the database.
        rules: the rules in force.
        refreshed: what this pass re-aggregated (re-opened windows); None: nothing.
        event_time: allowed lateness and idle-partition timeout.

    Returns:
        What was fired, resolved and re-judged.

    Raises:
        CursorMoved: another process evaluated a rule first (roll back and retry).
        StorageError: the database refused.
    """
    judged = Judged()
    now = utcnow()
    hold = oldest_dirty(conn)
    for rule in rules.enabled:
        reopened = (refreshed.windows.get(rule.window, set()) if refreshed else set())
        run = RulePass(conn, storage, rule, event_time, judged, now)
        run.run(reopened, hold)
    return judged


def alert_records(conn: sa.Connection, ids: list[str]) -> list[Alert]:
    """The ``Alert`` records of ``ids``, oldest first."""
    if not ids:
        return []
    rows = (
        conn.execute(
            sa.select(t.alerts)
            .where(t.alerts.c.id.in_(ids))
            .order_by(t.alerts.c.fired_at, t.alerts.c.id)
        )
        .mappings()
        .all()
    )
    return Storage.alert_records(conn, rows)


def evaluate(
    storage: Storage, rules: RuleSet, *, event_time: EventTime = EventTime()
) -> list[Alert]:
    """Evaluate every enabled rule over the stored aggregates, in one transaction.

    A batch run (``aggregate`` then ``evaluate``) over a whole database judges every
    closed window once; a second call over the same data returns ``[]``.

    Args:
        storage: the database, with aggregates for the rules' window sizes.
        rules: the rules in force.
        event_time: allowed lateness and idle-partition timeout.

    Returns:
        The alerts that fired for the first time in this call (some may already be
        resolved, when a whole episode lies in the windows judged now), oldest first.

    Raises:
        StorageError: the database refused.
    """
    try:
        with storage.begin() as conn:
            judged = judge(conn, storage, rules, event_time=event_time)
    except CursorMoved as exc:
        logger.info("rule %s: another process evaluated these windows first", exc)
        return []
    with storage.begin() as conn:
        return alert_records(conn, judged.new_ids)

"""Run the alert rules over the window aggregates and keep the ``alerts`` table current.

Event time drives everything. The stream's *watermark* is the latest ``published_at``
aggregated for the rule's window size; a window is *closed* once the watermark passes
its end by the rule's ``lateness``. Each rule keeps a cursor (``rule_cursors``): closed
windows are evaluated exactly once, in order, and their verdicts update the per-ticker
baseline (``rule_baselines``) and the alerts in one transaction. The cursor only moves
if no other process moved it first, so several monitors can run side by side.

Alert life cycle, per rule and ticker:

- fire: a window meets the condition, nothing is firing and the cooldown since the
  last resolution has passed. The id is ``<rule>:<ticker>:<window>:<window start>``.
  Open windows may fire early (the condition already holds on part of the window).
- update: while firing, each further window meeting the condition extends it and
  keeps the worst value; its most negative posts join the explanation.
- resolve: a closed window with enough posts no longer meets the condition, or no
  window has met it for ``resolve_after``. Windows without enough posts change nothing.

``evaluate`` returns the alerts that did not exist before the call; a second call over
the same data returns ``[]``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from finpulse.schemas import WINDOW_SECONDS, Alert
from finpulse.storage import Storage, utcnow
from finpulse.storage import tables as t
from finpulse.storage.outbox import record_alert_event
from monitor.aggregation import window_start
from monitor.detectors import Check, Detector, State, WindowStats, detector_for
from monitor.evidence import (
    Evidence,
    explain,
    rank,
    stored_posts,
    summary_of,
    window_posts,
    write_posts,
)
from monitor.rules import NegativeVolumeSpikeRule, RuleSet, SentimentDropRule

logger = logging.getLogger(__name__)


class _CursorMoved(Exception):
    """Another process evaluated the same windows first; this run's work is dropped."""


def alert_id(rule: str, ticker: str, window: str, start: datetime) -> str:
    """The deterministic id of the alert a rule raises for a ticker from a window on."""
    return f"{rule}:{ticker}:{window}:{start:%Y-%m-%dT%H:%MZ}"


class _RuleRun:
    """One evaluation pass of one rule, inside one transaction."""

    def __init__(
        self,
        conn: sa.Connection,
        storage: Storage,
        rule: SentimentDropRule | NegativeVolumeSpikeRule,
    ) -> None:
        self.conn = conn
        self.storage = storage
        self.rule = rule
        self.detector: Detector = detector_for(rule)
        self.size = timedelta(seconds=WINDOW_SECONDS[rule.window])
        self.now = utcnow()
        self.new_ids: list[str] = []
        self.firing: dict[str, Any] = {}
        self.last_resolved: dict[str, datetime] = {}

    # ---- reading -------------------------------------------------------------------------

    def _windows(self, where: Any) -> dict[str, list[WindowStats]]:
        a = t.aggregates
        query = (
            sa.select(
                a.c.ticker,
                a.c.window_start,
                a.c.n,
                a.c.n_negative,
                a.c.mean_score,
                a.c.score_std,
                a.c.last_published_at,
            )
            .where(a.c.window_size == self.rule.window, where)
            .order_by(a.c.ticker, a.c.window_start)
        )
        out: dict[str, list[WindowStats]] = defaultdict(list)
        for row in self.conn.execute(query):
            out[row[0]].append(WindowStats(*row))
        return out

    def _load_alert_state(self) -> None:
        al = t.alerts
        rows = self.conn.execute(
            sa.select(al).where(al.c.rule == self.rule.name, al.c.state == "firing")
        )
        self.firing = {row["ticker"]: dict(row) for row in rows.mappings()}
        resolved = self.conn.execute(
            sa.select(al.c.ticker, sa.func.max(al.c.resolved_at))
            .where(al.c.rule == self.rule.name, al.c.state == "resolved")
            .group_by(al.c.ticker)
        )
        self.last_resolved = dict(resolved.all())

    # ---- writing -------------------------------------------------------------------------

    def _summary(self, check: Check) -> str:
        return f"{self.rule.name} on {self.rule.window} windows: {check.summary}"

    def _evidence(self, ticker: str, start: datetime) -> list[Evidence]:
        return window_posts(self.conn, ticker, start, start + self.size, self.rule.explain_posts)

    def _fire(self, ticker: str, window: WindowStats, check: Check) -> None:
        ident = alert_id(self.rule.name, ticker, self.rule.window, window.start)
        posts = self._evidence(ticker, window.start)
        row = {
            "id": ident,
            "rule": self.rule.name,
            "ticker": ticker,
            "window_size": self.rule.window,
            "window_start": window.start,
            "last_window_start": window.start,
            "severity": self.rule.severity,
            "value": check.value,
            "threshold": check.threshold,
            "baseline": check.baseline,
            "state": "firing",
            "fired_at": window.last_published_at,
            "resolved_at": None,
            "updated_at": self.now,
            "explanation": explain(self._summary(check), posts),
        }
        stmt = (
            self.storage.insert(t.alerts)
            .values(row)
            .on_conflict_do_nothing()
            .returning(t.alerts.c.id)
        )
        if self.conn.execute(stmt).first() is None:
            logger.debug("alert %s already stored", ident)
            return
        write_posts(self.conn, ident, posts)
        record_alert_event(self.conn, ident, "fired")
        self.firing[ticker] = row
        self.new_ids.append(ident)
        logger.info("alert fired: %s (%s)", ident, check.summary)

    def _extend(self, alert: dict[str, Any], window: WindowStats, check: Check) -> None:
        changes: dict[str, Any] = {
            "last_window_start": max(window.start, alert["last_window_start"]),
            "updated_at": self.now,
        }
        summary = summary_of(alert["explanation"])
        if self.detector.worse(check.value, alert["value"]):
            changes.update(value=check.value, threshold=check.threshold, baseline=check.baseline)
            summary = self._summary(check)
        merged = {e.post_id: e for e in stored_posts(self.conn, alert["id"])}
        merged.update({e.post_id: e for e in self._evidence(alert["ticker"], window.start)})
        posts = rank(list(merged.values()), self.rule.explain_posts)
        changes["explanation"] = explain(summary, posts)
        self.conn.execute(sa.update(t.alerts).where(t.alerts.c.id == alert["id"]).values(**changes))
        write_posts(self.conn, alert["id"], posts)
        record_alert_event(self.conn, alert["id"], "updated")
        alert.update(changes)

    def _resolve(self, ticker: str, at: datetime) -> None:
        alert = self.firing.pop(ticker)
        self.conn.execute(
            sa.update(t.alerts)
            .where(t.alerts.c.id == alert["id"])
            .values(state="resolved", resolved_at=at, updated_at=self.now)
        )
        record_alert_event(self.conn, alert["id"], "resolved")
        self.last_resolved[ticker] = at
        logger.info("alert resolved: %s at %s", alert["id"], at.isoformat())

    def _stale_until(self, alert: dict[str, Any]) -> datetime:
        """When a firing alert resolves if no further window meets the condition."""
        return alert["last_window_start"] + self.size + self.rule.resolve_after

    def _cooled_down(self, ticker: str, start: datetime) -> bool:
        last = self.last_resolved.get(ticker)
        return last is None or start >= last + self.rule.cooldown

    # ---- the pass ------------------------------------------------------------------------

    def _judge(self, ticker: str, window: WindowStats, check: Check) -> None:
        alert = self.firing.get(ticker)
        if alert is not None and window.start >= self._stale_until(alert):
            self._resolve(ticker, self._stale_until(alert))
            alert = None
        if check.hit is True:
            if alert is not None:
                self._extend(alert, window, check)
            elif self._cooled_down(ticker, window.start):
                self._fire(ticker, window, check)
        elif check.hit is False and alert is not None and window.start > alert["last_window_start"]:
            self._resolve(ticker, window.start)

    def _clock(self) -> tuple[datetime, datetime] | None:
        """(stream start, closed-until) in event time, or None while there are no windows."""
        a, rule = t.aggregates, self.rule
        stream_start, newest = self.conn.execute(
            sa.select(sa.func.min(a.c.window_start), sa.func.max(a.c.window_start)).where(
                a.c.window_size == rule.window
            )
        ).one()
        if stream_start is None:
            return None
        watermark = self.conn.execute(
            sa.select(sa.func.max(a.c.last_published_at)).where(
                a.c.window_size == rule.window, a.c.window_start >= newest
            )
        ).scalar_one()
        return stream_start, window_start(watermark - rule.lateness, WINDOW_SECONDS[rule.window])

    def _close(
        self,
        ticker: str,
        windows: list[WindowStats],
        state: State | None,
        stream_start: datetime,
        alert_from: datetime | None,
    ) -> State | None:
        """Judge closed windows in order; return the baseline after the last of them."""
        for window in windows:
            current = self.detector.advance(state, window, stream_start)
            if alert_from is None or window.start >= alert_from:
                self._judge(ticker, window, self.detector.check(current, window, stream_start))
            state = self.detector.update(current, window)
        return state

    def _peek(
        self, ticker: str, windows: list[WindowStats], state: State | None, stream_start: datetime
    ) -> None:
        """Fire early on open windows that already meet the condition."""
        for window in windows:
            if ticker in self.firing:
                return
            if not self._cooled_down(ticker, window.start):
                continue
            current = self.detector.advance(state, window, stream_start)
            check = self.detector.check(current, window, stream_start)
            if check.hit is True:
                self._fire(ticker, window, check)

    def run(self, since: datetime | None) -> list[str]:
        """Judge newly closed windows, peek at open ones; return the ids of new alerts.

        Raises:
            _CursorMoved: another process judged the same windows first.
        """
        rule, a, rb = self.rule, t.aggregates, t.rule_baselines
        clock = self._clock()
        if clock is None:
            return []
        stream_start, closed_until = clock
        cursor = (
            self.conn.execute(sa.select(t.rule_cursors).where(t.rule_cursors.c.rule == rule.name))
            .mappings()
            .first()
        )
        fingerprint = rule.fingerprint()
        baselines: dict[str, State] = {}
        done_until: datetime | None = None
        alert_from: datetime | None = None
        if cursor is not None and cursor["fingerprint"] == fingerprint:
            done_until = cursor["closed_until"]
            rows = self.conn.execute(
                sa.select(rb.c.ticker, rb.c.state).where(rb.c.rule == rule.name)
            )
            baselines = dict(rows.all())
        else:
            # First run, or the baseline's definition changed: rebuild it from all history,
            # but only alert on windows the previous configuration had not judged yet.
            alert_from = cursor["closed_until"] if cursor is not None else None
            self.conn.execute(sa.delete(rb).where(rb.c.rule == rule.name))
        self._load_alert_state()

        if done_until is None or closed_until > done_until:
            where = a.c.window_start < closed_until
            if done_until is not None:
                where = sa.and_(where, a.c.window_start >= done_until)
            closed = self._windows(where)
            for ticker, windows in closed.items():
                state = self._close(
                    ticker, windows, baselines.get(ticker), stream_start, alert_from
                )
                if state is not None:
                    baselines[ticker] = state
            for ticker in list(self.firing):
                if self._stale_until(self.firing[ticker]) <= closed_until:
                    self._resolve(ticker, self._stale_until(self.firing[ticker]))
            self._save(set(closed), baselines, cursor, closed_until, fingerprint)

        # Open windows may fire early; they are judged for good once closed.
        where = a.c.window_start >= closed_until
        if since is not None:
            where = sa.and_(where, a.c.updated_at >= since)
        for ticker, windows in self._windows(where).items():
            self._peek(ticker, windows, baselines.get(ticker), stream_start)
        return self.new_ids

    def _save(
        self,
        dirty: set[str],
        baselines: dict[str, dict[str, Any]],
        cursor: Any,
        closed_until: datetime,
        fingerprint: str,
    ) -> None:
        rb, rc = t.rule_baselines, t.rule_cursors
        rows = [
            {
                "rule": self.rule.name,
                "ticker": ticker,
                "state": baselines[ticker],
                "updated_at": self.now,
            }
            for ticker in sorted(dirty)
        ]
        for i in range(0, len(rows), 500):
            stmt = self.storage.insert(rb).values(rows[i : i + 500])
            stmt = stmt.on_conflict_do_update(
                index_elements=[rb.c.rule, rb.c.ticker],
                set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
            )
            self.conn.execute(stmt)
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
            raise _CursorMoved(self.rule.name)


def evaluate(storage: Storage, rules: RuleSet, since: datetime | None = None) -> list[Alert]:
    """Evaluate every enabled rule and store new, extended and resolved alerts.

    Args:
        storage: the database, with aggregates for the rules' window sizes.
        rules: the rules in force.
        since: only open windows whose aggregate was updated at or after this time (write
            time, as for ``aggregate``) are checked for an early fire; closed windows are
            judged exactly once from each rule's stored cursor whatever ``since`` is.

    Returns:
        The alerts that fired for the first time in this call (some may already be
        resolved, when a whole episode lies in the windows judged now), oldest first.

    Raises:
        StorageError: the database refused.
    """
    new_ids: list[str] = []
    for rule in rules.enabled:
        try:
            with storage.begin() as conn:
                new_ids.extend(_RuleRun(conn, storage, rule).run(since))
        except _CursorMoved:
            logger.info("rule %s: another process evaluated these windows first", rule.name)
    if not new_ids:
        return []
    with storage.begin() as conn:
        rows = (
            conn.execute(
                sa.select(t.alerts)
                .where(t.alerts.c.id.in_(new_ids))
                .order_by(t.alerts.c.fired_at, t.alerts.c.id)
            )
            .mappings()
            .all()
        )
        return storage.alert_records(conn, rows)

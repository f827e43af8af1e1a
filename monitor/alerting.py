"""The alert life cycle of one rule over one ticker's closed windows, kept in ``alerts``.

Per rule and ticker, one function per transition (``_fire``, ``_extend``, ``_resolve``):

- fire: a window meets the condition, nothing is firing and the cooldown since the
  last resolution has passed. The id is ``<rule>:<ticker>:<window>:<window start>``.
- update: while firing, each further window meeting the condition extends it and
  keeps the worst value; its most negative posts join the explanation.
- resolve: a closed window with enough posts no longer meets the condition, or no
  window has met it for ``resolve_after``. Windows without enough posts change nothing.

Which windows are judged and when (event time, per-ticker cursors, late posts) is
``monitor.judging``'s business. When a late post makes it replay a ticker's windows, the
alerts the replay raises again are updated in place (same id, ``_fire``), those it no
longer raises are deleted (``_retract``), and an alert that was firing before the
re-opened window is set back to firing (``_reopen``).

``evaluate(storage, rules)`` (a batch pass over the stored aggregates) lives in
``monitor.judging`` and is re-exported here.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from finpulse.schemas import WINDOW_SECONDS, Alert
from finpulse.storage import Storage
from finpulse.storage import tables as t
from finpulse.storage.outbox import record_alert_event
from monitor.detectors import Check, Detector, WindowStats, detector_for
from monitor.evidence import (
    Evidence,
    explain,
    rank,
    stored_posts,
    summary_of,
    window_posts,
    write_posts,
)
from monitor.rule_state import Machine
from monitor.rules import NegativeVolumeSpikeRule, RuleSet, SentimentDropRule

if TYPE_CHECKING:
    from monitor.judging import EventTime, Judged

logger = logging.getLogger(__name__)


def alert_id(rule: str, ticker: str, window: str, start: datetime) -> str:
    """The deterministic id of the alert a rule raises for a ticker from a window on."""
    return f"{rule}:{ticker}:{window}:{start:%Y-%m-%dT%H:%MZ}"



class RuleRun:
    """The alert transitions of one rule in one pass, inside the caller's transaction."""

    def __init__(
        self,
        conn: sa.Connection,
        storage: Storage,
        rule: SentimentDropRule | NegativeVolumeSpikeRule,
        event_time: EventTime,
        judged: Judged,
        now: datetime,
    ) -> None:
        self.conn = conn
        self.storage = storage
        self.rule = rule
        self.event_time = event_time
        self.judged = judged
        self.detector: Detector = detector_for(rule)
        self.size = timedelta(seconds=WINDOW_SECONDS[rule.window])
        self.now = now
        self.machines: dict[str, Machine] = {}
        # Alerts fired from windows a rewind is replaying: re-fired in place or deleted.
        self.replayed: dict[str, dict[str, Any]] = {}
        self.snapshots: list[tuple[str, datetime, dict[str, Any]]] = []

    # ---- reading -------------------------------------------------------------------------


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
        machine = self.machines[ticker]
        if self.replayed.pop(ident, None) is not None:
            # A rewind raised the same alert again: refresh it in place (not a new alert).
            values = {k: v for k, v in row.items() if k != "id"}
            self.conn.execute(sa.update(t.alerts).where(t.alerts.c.id == ident).values(**values))
            event = "updated"
        else:
            stmt = (
                self.storage.insert(t.alerts)
                .values(row)
                .on_conflict_do_nothing()
                .returning(t.alerts.c.id)
            )
            if self.conn.execute(stmt).first() is None:
                logger.debug("alert %s already stored", ident)
                return
            self.judged.new_ids.append(ident)
            logger.info("alert fired: %s (%s)", ident, check.summary)
            event = "fired"
        write_posts(self.conn, ident, posts)
        record_alert_event(self.conn, ident, event)
        machine.firing = row

    def _extend(self, ticker: str, window: WindowStats, check: Check) -> None:
        alert = self.machines[ticker].firing
        assert alert is not None
        changes: dict[str, Any] = {
            "last_window_start": max(window.start, alert["last_window_start"]),
            "updated_at": self.now,
        }
        summary = summary_of(alert["explanation"])
        if self.detector.worse(check.value, alert["value"]):
            changes.update(value=check.value, threshold=check.threshold, baseline=check.baseline)
            summary = self._summary(check)
        merged = {e.post_id: e for e in stored_posts(self.conn, alert["id"])}
        merged.update({e.post_id: e for e in self._evidence(ticker, window.start)})
        posts = rank(list(merged.values()), self.rule.explain_posts)
        changes["explanation"] = explain(summary, posts)
        self.conn.execute(sa.update(t.alerts).where(t.alerts.c.id == alert["id"]).values(**changes))
        write_posts(self.conn, alert["id"], posts)
        record_alert_event(self.conn, alert["id"], "updated")
        alert.update(changes)

    def _resolve(self, ticker: str, at: datetime) -> None:
        machine = self.machines[ticker]
        alert = machine.firing
        assert alert is not None
        machine.firing = None
        self.conn.execute(
            sa.update(t.alerts)
            .where(t.alerts.c.id == alert["id"])
            .values(state="resolved", resolved_at=at, updated_at=self.now)
        )
        record_alert_event(self.conn, alert["id"], "resolved")
        machine.last_resolved = at
        self.judged.resolved[self.rule.name] += 1
        logger.info("alert resolved: %s at %s", alert["id"], at.isoformat())

    def _reopen(self, ticker: str) -> None:
        """A rewind went back to before this alert resolved or changed: restore it as firing."""
        alert = self.machines[ticker].firing
        assert alert is not None
        keep = ("last_window_start", "value", "threshold", "baseline", "explanation")
        self.conn.execute(
            sa.update(t.alerts).where(t.alerts.c.id == alert["id"]).values(
                state="firing", resolved_at=None, updated_at=self.now,
                **{k: alert[k] for k in keep},
            )
        )
        record_alert_event(self.conn, alert["id"], "updated")

    def _retract(self) -> None:
        """Delete the alerts a rewind no longer raises (the corrected windows do not)."""
        for ident in sorted(self.replayed):
            # Subscribers were told it fired: tell them it is over before it goes.
            ended = self.conn.execute(
                sa.update(t.alerts).where(t.alerts.c.id == ident, t.alerts.c.state == "firing")
                .values(state="resolved", resolved_at=self.now, updated_at=self.now)
            )
            if ended.rowcount:
                record_alert_event(self.conn, ident, "resolved")
            self.conn.execute(sa.delete(t.alerts).where(t.alerts.c.id == ident))
            logger.warning("alert retracted: %s (late posts changed its window)", ident)
        self.replayed.clear()

    # ---- the pass ------------------------------------------------------------------------

    def _stale_until(self, alert: dict[str, Any]) -> datetime:
        """When a firing alert resolves if no further window meets the condition."""
        return alert["last_window_start"] + self.size + self.rule.resolve_after

    def _cooled_down(self, ticker: str, start: datetime) -> bool:
        last = self.machines[ticker].last_resolved
        return last is None or start >= last + self.rule.cooldown

    def _judge(self, ticker: str, window: WindowStats, check: Check) -> None:
        alert = self.machines[ticker].firing
        if alert is not None and window.start >= self._stale_until(alert):
            self._resolve(ticker, self._stale_until(alert))
            alert = None
        if check.hit is True:
            if alert is not None:
                self._extend(ticker, window, check)
            elif self._cooled_down(ticker, window.start):
                self._fire(ticker, window, check)
        elif check.hit is False and alert is not None and window.start > alert["last_window_start"]:
            self._resolve(ticker, window.start)

    def _close(
        self,
        ticker: str,
        windows: list[WindowStats],
        stream_start: datetime,
        alert_from: datetime | None,
    ) -> None:
        """Judge closed windows in order, snapshotting the machine before each."""
        machine = self.machines[ticker]
        for window in windows:
            self.snapshots.append((ticker, window.start, machine.to_json()))
            current = self.detector.advance(machine.detector, window, stream_start)
            if alert_from is None or window.start >= alert_from:
                self._judge(ticker, window, self.detector.check(current, window, stream_start))
            machine.detector = self.detector.update(current, window)
            machine.next_start = window.start + self.size


def evaluate(storage: Storage, rules: RuleSet, **kwargs: Any) -> list[Alert]:
    """``monitor.judging.evaluate``: a batch pass of every rule (see there)."""
    from monitor.judging import evaluate as evaluate_all

    return evaluate_all(storage, rules, **kwargs)

"""The monitor service: turns stored scores into window aggregates and alerts, periodically.

Each pass is one database transaction: it claims the (ticker, minute) buckets the scorers
marked dirty, re-aggregates only the windows that hold them, and lets every rule judge
the windows that closed or were re-opened (``monitor.alerting``). All progress lives in
the database (dirty markers, per-partition progress, per-(rule, ticker) cursors), none in
memory: a restarted monitor resumes where the last committed pass left off, a pass that
fails half-way leaves no trace, and several monitors can share one database.

Faults follow ``finpulse.services.policy``: a transient one (the database unreachable)
is retried with back-off until it clears; anything else stops the service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa

from finpulse.metrics import Metrics
from finpulse.schemas import WINDOW_SECONDS, Alert
from finpulse.services.policy import Backoff, retry_transient
from finpulse.settings import MonitorSettings
from finpulse.storage import Storage
from finpulse.storage import tables as t
from monitor.aggregation import Refreshed, count_dirty, refresh_dirty, window_start
from monitor.health import evaluate_model_health
from monitor.judging import CursorMoved, EventTime, Judged, alert_records, judge
from monitor.risk_events import evaluate_risk_events
from monitor.rules import RuleSet

logger = logging.getLogger(__name__)

WINDOWS = ("1m", "5m", "1h")


@dataclass
class MonitorPass:
    """What one pass wrote and raised."""

    aggregates: int
    fired: list[Alert] = field(default_factory=list)
    waiting: int = 0


def late_outcomes(refreshed: Refreshed, judged: Judged) -> Counter[str]:
    """New scores in already judged windows, by outcome (``rejudged`` wins over ``too_late``)."""
    counts: Counter[str] = Counter()
    for (ticker, minute), n in refreshed.markers.items():
        outcomes = {
            late.get((ticker, window_start(minute, WINDOW_SECONDS[size])))
            for size, late in judged.late.items()
        }
        if "rejudged" in outcomes:
            counts["rejudged"] += n
        elif "too_late" in outcomes:
            counts["too_late"] += n
    return counts


class MonitorService:
    """Aggregates and evaluates alert rules; ``run_once`` for one pass, ``run`` to loop."""

    def __init__(
        self,
        storage: Storage,
        rules: RuleSet,
        metrics: Metrics | None = None,
        settings: MonitorSettings | None = None,
    ) -> None:
        self.storage = storage
        self.rules = rules
        self.metrics = metrics
        self.settings = settings or MonitorSettings()
        self.event_time = EventTime(
            allowed_lateness=timedelta(seconds=self.settings.allowed_lateness_s),
            idle_after=timedelta(seconds=self.settings.idle_partition_s),
        )
        # The dashboards' windows plus whatever the rules read.
        self._windows = tuple(dict.fromkeys((*WINDOWS, *rules.windows)))
        if metrics is not None:
            # Every rule's series exist from the start, at 0, so increase() sees the first alert.
            for rule in rules.rules:
                metrics.alerts_fired.labels(rule=rule.name, severity=rule.severity)
                metrics.alerts_resolved.labels(rule=rule.name)

    def run_once(self) -> MonitorPass:
        """One pass over what the scorers stored since the last committed pass.

        Raises:
            StorageError: the database refused or could not be reached (nothing committed).
        """
        started = time.perf_counter()
        try:
            with self.storage.begin() as conn:
                refreshed = refresh_dirty(
                    conn, self.storage, self._windows, self.settings.max_dirty_per_pass
                )
                judged = judge(conn, self.storage, self.rules, refreshed=refreshed,
                               event_time=self.event_time)
                fired = alert_records(conn, judged.new_ids)
                waiting = count_dirty(conn)
        except CursorMoved as exc:
            logger.info("rule %s: another monitor evaluated these windows first", exc)
            return MonitorPass(aggregates=0)
        # Per-post risk events and per-source model health: passes of their own, with their
        # own stored cursors, after the windows above are committed.
        fired += evaluate_risk_events(self.storage, self.rules)
        fired += evaluate_model_health(self.storage, self.rules)
        with self.storage.begin() as conn:
            firing = Counter(dict(conn.execute(
                sa.select(t.alerts.c.rule, sa.func.count())
                .where(t.alerts.c.state == "firing").group_by(t.alerts.c.rule)
            ).all()))
        if self.metrics is not None:
            self._observe(refreshed, judged, fired, firing, waiting, time.perf_counter() - started)
        for alert in fired:
            logger.info("alert %s %s %s: %s", alert.rule, alert.ticker, alert.window, alert.explanation)
        return MonitorPass(aggregates=refreshed.rows, fired=fired, waiting=waiting)

    def _observe(
        self,
        refreshed: Refreshed,
        judged: Judged,
        fired: list[Alert],
        firing: Counter[str],
        waiting: int,
        took: float,
    ) -> None:
        metrics = self.metrics
        assert metrics is not None
        for alert in fired:
            metrics.alerts_fired.labels(rule=alert.rule, severity=alert.severity).inc()
        for rule, n in judged.resolved.items():
            metrics.alerts_resolved.labels(rule=rule).inc(n)
        for outcome, n in late_outcomes(refreshed, judged).items():
            metrics.late_posts.labels(outcome=outcome).inc(n)
        for rule in self.rules.rules:
            metrics.alerts_firing.labels(rule=rule.name).set(firing[rule.name])
        metrics.dirty_windows.set(waiting)
        metrics.monitor_pass_duration.observe(took)
        metrics.monitor_last_pass.set_to_current_time()

    def run(self, stop: threading.Event, interval_s: float = 10.0) -> None:
        """Run a pass every ``interval_s`` seconds until ``stop`` is set.

        A pass that leaves dirty buckets waiting is followed at once by the next. Transient
        faults (database unreachable) are retried with capped back-off; the pass is
        redone from the database's state, so nothing is lost or done twice.

        Raises:
            FinpulseError: a fault that is not transient.
        """
        backoff = Backoff(base_s=0.5, cap_s=min(30.0, max(interval_s, 1.0) * 3))
        while not stop.is_set():
            result = retry_transient(self.run_once, stop=stop, what="monitor pass",
                                     backoff=backoff)
            if result is not None and result.waiting:
                continue
            stop.wait(interval_s)

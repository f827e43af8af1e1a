"""The monitor service: turns stored scores into window aggregates and alerts, periodically.

Each pass recomputes the windows that received scores stored since shortly before the
previous pass began (the margin absorbs clock skew between the scorers' hosts) and
evaluates the alert rules over them. Both steps are idempotent, so several monitors, or
a restarted one, never double-count.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from finpulse.metrics import Metrics
from finpulse.schemas import Alert
from finpulse.storage import Storage
from monitor.aggregation import aggregate
from monitor.alerting import evaluate
from monitor.rules import RuleSet

logger = logging.getLogger(__name__)

WINDOWS = ("1m", "5m", "1h")
CLOCK_SKEW = timedelta(seconds=60)


@dataclass
class MonitorPass:
    """What one pass wrote and raised."""

    aggregates: int
    fired: list[Alert] = field(default_factory=list)


class MonitorService:
    """Aggregates and evaluates alert rules; ``run_once`` for one pass, ``run`` to loop."""

    def __init__(self, storage: Storage, rules: RuleSet, metrics: Metrics | None = None) -> None:
        self.storage = storage
        self.rules = rules
        self.metrics = metrics
        self._watermark: datetime | None = None
        # The dashboards' windows plus whatever the rules read.
        self._windows = tuple(dict.fromkeys((*WINDOWS, *rules.windows)))

    def run_once(self) -> MonitorPass:
        """One pass over what was stored since the previous one (everything on the first)."""
        started = datetime.now(timezone.utc)
        since = None if self._watermark is None else self._watermark - CLOCK_SKEW
        written = aggregate(self.storage, self._windows, since=since)
        fired = evaluate(self.storage, self.rules, since=since)
        if self.metrics is not None:
            for alert in fired:
                self.metrics.alerts_fired.labels(rule=alert.rule, severity=alert.severity).inc()
            firing = Counter(alert.rule for alert in self.storage.alerts(state="firing"))
            for rule in self.rules.rules:
                self.metrics.alerts_firing.labels(rule=rule.name).set(firing[rule.name])
        for alert in fired:
            logger.info("alert %s %s %s: %s", alert.rule, alert.ticker, alert.window, alert.explanation)
        self._watermark = started
        return MonitorPass(aggregates=written, fired=fired)

    def run(self, stop: threading.Event, interval_s: float = 10.0) -> None:
        """Run a pass every ``interval_s`` seconds until ``stop`` is set."""
        while not stop.is_set():
            self.run_once()
            stop.wait(interval_s)

"""Backtest alert rules over stored history without writing a single alert.

The real engine runs, not a re-implementation: the posts and scores published in
``[since - warm-up, until)`` are copied from the database into a temporary SQLite file,
and the same passes a monitor runs (``aggregate``, ``evaluate``, the risk-event and
model-health passes) run there. Whatever fired with ``fired_at`` in ``[since, until)``
is reported; alerts from the warm-up (which only builds baselines) are counted apart.
The copy is deleted afterwards; the source database is only read.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from finpulse.errors import ConfigError
from finpulse.schemas import WINDOW_SECONDS, Alert
from finpulse.storage import Storage
from finpulse.storage import tables as t
from monitor.aggregation import aggregate
from monitor.alerting import evaluate
from monitor.health import evaluate_model_health
from monitor.risk_events import evaluate_risk_events
from monitor.rules import ModelHealthRule, RiskEventRule, RuleSet

logger = logging.getLogger(__name__)

_CHUNK = 500
# Windows the dashboards read are not needed here: only what the rules read.
_MIN_WARMUP = timedelta(hours=1)


@dataclass
class BacktestResult:
    """What the rules would have fired in ``[since, until)``."""

    since: datetime
    until: datetime
    warmup_from: datetime
    rules: tuple[str, ...]
    posts: int
    scores: int
    alerts: list[Alert] = field(default_factory=list)
    warmup_alerts: int = 0

    def by_rule_and_ticker(self) -> list[tuple[str, str | None, list[Alert]]]:
        """``(rule, ticker, alerts)`` per rule and ticker; a rule that fired nothing: ticker None."""
        out: list[tuple[str, str | None, list[Alert]]] = []
        for rule in self.rules:
            fired = sorted((a for a in self.alerts if a.rule == rule),
                           key=lambda a: (a.ticker, a.fired_at))
            if not fired:
                out.append((rule, None, []))
            for ticker in dict.fromkeys(a.ticker for a in fired):
                out.append((rule, ticker, [a for a in fired if a.ticker == ticker]))
        return out


def default_warmup(rules: RuleSet) -> timedelta:
    """History before ``since`` that the rules' baselines need.

    Window rules: their ``warmup`` and three baseline half-lives; model health: the
    reference period and a window; risk events: ``resolve_after`` (an alert from just
    before ``since`` still holds its story). At least an hour.
    """
    needed = [_MIN_WARMUP]
    for rule in rules.rules:
        if not rule.enabled:
            continue
        if isinstance(rule, RiskEventRule):
            needed.append(rule.resolve_after)
        elif isinstance(rule, ModelHealthRule):
            needed.append(rule.reference + timedelta(seconds=WINDOW_SECONDS[rule.window]))
        else:
            size = timedelta(seconds=WINDOW_SECONDS[rule.window])
            needed.append(max(getattr(rule, "warmup", timedelta(0)), 3 * rule.halflife * size))
    return max(needed)


def _copy(source: Storage, target: Storage, start: datetime, until: datetime) -> tuple[int, int]:
    """Copy posts, their tickers and live scores published in ``[start, until)``."""
    p, pt, s = t.posts, t.post_tickers, t.scores
    queries = (
        (p, sa.select(p).where(p.c.published_at >= start, p.c.published_at < until)),
        (pt, sa.select(pt).where(pt.c.published_at >= start, pt.c.published_at < until)),
        (s, sa.select(s).join(p, p.c.id == s.c.post_id)
            .where(p.c.published_at >= start, p.c.published_at < until, s.c.role == t.LIVE)),
    )
    counts = {}
    with source.begin() as read, target.begin() as write:
        for table, query in queries:
            n = 0
            result = read.execution_options(stream_results=True, yield_per=_CHUNK).execute(query)
            for rows in result.mappings().partitions(_CHUNK):
                write.execute(sa.insert(table), [dict(row) for row in rows])
                n += len(rows)
            counts[table.name] = n
    return counts["posts"], counts["scores"]


def run_backtest(
    source: Storage,
    rules: RuleSet,
    since: datetime,
    until: datetime,
    warmup: timedelta | None = None,
) -> BacktestResult:
    """Replay ``rules`` over the stored history of ``[since, until)``; write nothing to ``source``.

    Args:
        source: the database to read history from.
        rules: the rules to try.
        since: report alerts fired at or after this time (event time).
        until: ...and before this time.
        warmup: history before ``since`` the baselines learn from; None: ``default_warmup``.

    Returns:
        The alerts the rules would have fired, and the size of the replay.

    Raises:
        ConfigError: ``since`` is not before ``until``.
        StorageError: the source database cannot be read.
    """
    if since >= until:
        raise ConfigError("--since must be before --until", field="since")
    warmup = default_warmup(rules) if warmup is None else warmup
    start = since - warmup
    with tempfile.TemporaryDirectory(prefix="finpulse-backtest-") as tmp:
        replay = Storage(f"sqlite:///{Path(tmp) / 'backtest.db'}")
        try:
            replay.migrate()
            posts, scores = _copy(source, replay, start, until)
            logger.info("backtest: copied %d posts, %d scores from %s", posts, scores, start)
            if rules.enabled:
                aggregate(replay, rules.windows)
                evaluate(replay, rules)
            evaluate_risk_events(replay, rules)
            evaluate_model_health(replay, rules)
            fired = replay.alerts()
        finally:
            replay.dispose()
    names = tuple(r.name for r in rules.rules if r.enabled)
    inside = [a for a in fired if since <= a.fired_at < until]
    return BacktestResult(
        since=since,
        until=until,
        warmup_from=start,
        rules=names,
        posts=posts,
        scores=scores,
        alerts=sorted(inside, key=lambda a: (a.fired_at, a.id)),
        warmup_alerts=sum(a.fired_at < since for a in fired),
    )

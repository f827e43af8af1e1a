"""Model-health alerts per source: low-confidence share and label-mix drift.

Each ``model_health`` rule judges closed windows of event time per source: a window is
closed once the source's newest ``published_at`` passes its end by ``lateness``. The
rule keeps one cursor per source (``rule_baselines``, ticker ``*``), so each closed
window is judged once. A post counts with its latest score, as in the aggregates.

- ``low_confidence``: value = share of the window's posts scored with confidence below
  ``low_confidence``; fires above ``max_share``.
- ``label_drift``: the window's label counts against the label mix of the ``reference``
  period just before it. PSI = sum((w - r) * ln(w / r)) over the label shares (smoothed,
  so an absent label is not infinite); or Pearson's chi-square goodness of fit with
  2 degrees of freedom (3 labels), whose p-value is exactly exp(-chi2 / 2).

Life cycle per (rule, source), as for window rules: fire (after the cooldown), extend
while windows keep meeting the condition, resolve on a window with enough posts that
does not, or ``resolve_after`` past the last one that did. Alerts store the source in
their ``ticker`` column (cut to 10 characters); the id carries it whole. Editing a rule's
``check``, ``window`` or ``sources`` restarts its cursors, and the windows are judged
again; a window a firing alert already holds does not extend it again.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa

from finpulse.schemas import LABELS, WINDOW_SECONDS, Alert
from finpulse.storage import Storage, utcnow
from finpulse.storage import tables as t
from monitor.event_alerts import (
    alert_records,
    firing_alerts,
    insert_alert,
    resolve_alert,
    update_alert,
)
from monitor.evidence import EVIDENCE_SEPARATOR, Evidence, evidence_for, explain
from monitor.rules import ModelHealthRule, RuleSet

logger = logging.getLogger(__name__)

_SMOOTH = 0.5  # pseudo-count per label, so an absent label has a finite share


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Smoothed label shares (every label in ``LABELS`` gets a pseudo-count of 0.5)."""
    total = sum(counts.get(label, 0) for label in LABELS) + _SMOOTH * len(LABELS)
    return {label: (counts.get(label, 0) + _SMOOTH) / total for label in LABELS}


def psi(window: Mapping[str, int], reference: Mapping[str, int]) -> float:
    """Population stability index of the window's label mix against the reference's."""
    w, r = shares(window), shares(reference)
    return sum((w[label] - r[label]) * math.log(w[label] / r[label]) for label in LABELS)


def chi_square(window: Mapping[str, int], reference: Mapping[str, int]) -> tuple[float, float]:
    """Pearson's chi-square of the window's counts against the reference mix, and its p-value.

    Returns:
        (statistic, p-value) with len(LABELS) - 1 = 2 degrees of freedom.
    """
    n = sum(window.get(label, 0) for label in LABELS)
    expected = shares(reference)
    stat = sum(
        (window.get(label, 0) - n * expected[label]) ** 2 / (n * expected[label])
        for label in LABELS
    ) if n else 0.0
    return stat, math.exp(-stat / 2.0)


class Verdict(NamedTuple):
    """One window's health check: ``hit`` True/False/None, its figures and words."""

    hit: bool | None
    value: float
    threshold: float
    baseline: float | None
    summary: str


class _Post(NamedTuple):
    post_id: str
    published_at: datetime
    label: str
    confidence: float
    score: float


def judge(
    rule: ModelHealthRule, window: list[_Post] | list[Any], reference: list[_Post] | list[Any]
) -> Verdict:
    """Check one window of posts (with ``label`` and ``confidence``) against its reference."""
    n = len(window)
    if rule.check == "low_confidence":
        low = sum(p.confidence < rule.low_confidence for p in window)
        share = low / n if n else 0.0
        ref = (
            sum(p.confidence < rule.low_confidence for p in reference) / len(reference)
            if reference else None
        )
        summary = (
            f"{low} of {n} posts ({share:.0%}) scored with confidence < {rule.low_confidence:g}"
            + (f" vs {ref:.0%} in the previous {_span(rule.reference)}" if ref is not None else "")
            + f"; threshold {rule.max_share:.0%}"
        )
        if n < rule.min_posts:
            return Verdict(None, share, rule.max_share, ref, summary)
        return Verdict(share > rule.max_share, share, rule.max_share, ref, summary)
    counts = Counter(p.label for p in window)
    ref_counts = Counter(p.label for p in reference)
    mix = "/".join(f"{shares(counts)[label]:.0%}" for label in LABELS)
    ref_mix = "/".join(f"{shares(ref_counts)[label]:.0%}" for label in LABELS)
    words = f"label mix (neg/neu/pos) {mix} over {n} posts vs {ref_mix} over {len(reference)} " \
            f"in the previous {_span(rule.reference)}"
    enough = n >= rule.min_posts and len(reference) >= rule.min_reference_posts
    if rule.test == "psi":
        value = psi(counts, ref_counts)
        summary = f"{words}: PSI {value:.3f}, threshold {rule.psi_threshold:g}"
        return Verdict(value > rule.psi_threshold if enough else None, value,
                       rule.psi_threshold, None, summary)
    stat, p = chi_square(counts, ref_counts)
    summary = f"{words}: chi-square {stat:.1f}, p = {p:.2g}, threshold p < {rule.p_value:g}"
    return Verdict(p < rule.p_value if enough else None, stat,
                   -2.0 * math.log(rule.p_value), None, summary)


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h" if hours < 48 else f"{hours / 24:g} d"


def _floor(ts: datetime, seconds: int) -> datetime:
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=ts.tzinfo)


class _HealthRun:
    """One pass of one model-health rule, inside one transaction."""

    def __init__(self, conn: sa.Connection, storage: Storage, rule: ModelHealthRule) -> None:
        self.conn, self.storage, self.rule = conn, storage, rule
        self.size = timedelta(seconds=WINDOW_SECONDS[rule.window])
        self.now = utcnow()
        self.new_ids: list[str] = []

    def _posts(self, source: str, since: datetime | None, until: datetime) -> list[_Post]:
        p, s = t.posts, t.scores
        query = (
            sa.select(p.c.id, p.c.published_at, s.c.label, s.c.confidence, s.c.score,
                      s.c.scored_at, s.c.model_version)
            .join(s, sa.and_(s.c.post_id == p.c.id, s.c.role == t.LIVE))
            .where(p.c.source == source, p.c.published_at < until)
        )
        if since is not None:
            query = query.where(p.c.published_at >= since)
        latest: dict[str, tuple[Any, _Post]] = {}
        for row in self.conn.execute(query):
            rank = (row.scored_at, row.model_version)
            if row.id not in latest or rank > latest[row.id][0]:
                latest[row.id] = (
                    rank, _Post(row.id, row.published_at, row.label, row.confidence, row.score)
                )
        return sorted((post for _, post in latest.values()), key=lambda q: q.published_at)

    def _sources(self) -> dict[str, tuple[datetime, datetime]]:
        """Each source's first and newest ``published_at``."""
        p = t.posts
        query = sa.select(p.c.source, sa.func.min(p.c.published_at), sa.func.max(p.c.published_at))
        if self.rule.sources:
            query = query.where(p.c.source.in_(self.rule.sources))
        return {row[0]: (row[1], row[2]) for row in self.conn.execute(query.group_by(p.c.source))}

    def _cursors(self) -> dict[str, str]:
        rb = t.rule_baselines
        state = self.conn.execute(
            sa.select(rb.c.state).where(rb.c.rule == self.rule.name, rb.c.ticker == "*")
        ).scalar()
        if not state or state.get("fingerprint") != self.rule.fingerprint():
            return {}
        return dict(state.get("closed_until", {}))

    def _save_cursors(self, cursors: dict[str, str]) -> None:
        rb = t.rule_baselines
        state = {"fingerprint": self.rule.fingerprint(), "closed_until": cursors}
        stmt = self.storage.insert(rb).values(
            rule=self.rule.name, ticker="*", state=state, updated_at=self.now
        )
        self.conn.execute(stmt.on_conflict_do_update(
            index_elements=[rb.c.rule, rb.c.ticker],
            set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
        ))

    def _last_resolved(self, key: str) -> datetime | None:
        al = t.alerts
        return self.conn.execute(
            sa.select(sa.func.max(al.c.resolved_at)).where(
                al.c.rule == self.rule.name, al.c.ticker == key, al.c.state == "resolved"
            )
        ).scalar()

    def _evidence(self, posts: list[_Post]) -> list[Evidence]:
        """Low-confidence rule: the least confident posts; drift: the most negative ones."""
        if self.rule.check == "low_confidence":
            ranked = sorted(posts, key=lambda q: (q.confidence, q.post_id))
        else:
            ranked = sorted(posts, key=lambda q: (q.score, q.post_id))
        return evidence_for(
            self.conn, [(q.post_id, q.score) for q in ranked[: self.rule.explain_posts]]
        )

    def run(self) -> list[str]:
        rule = self.rule
        cursors = self._cursors()
        firing = firing_alerts(self.conn, rule.name)
        seconds = WINDOW_SECONDS[rule.window]
        for source, (first, newest) in sorted(self._sources().items()):
            closed_until = _floor(newest - rule.lateness, seconds)
            start = (
                datetime.fromisoformat(cursors[source]) if source in cursors
                else _floor(first, seconds)
            )
            if start >= closed_until:
                continue
            posts = self._posts(source, start - rule.reference, closed_until)
            by_window: dict[datetime, list[_Post]] = defaultdict(list)
            for post in posts:
                by_window[_floor(post.published_at, seconds)].append(post)
            key = source[:10]
            last_resolved = self._last_resolved(key)
            times = [q.published_at for q in posts]
            for window in sorted(w for w in by_window if w >= start):
                lo = bisect_left(times, window - rule.reference)
                reference = posts[lo : bisect_left(times, window)]
                verdict = judge(rule, by_window[window], reference)
                last_resolved = self._judge(source, window, by_window[window], verdict,
                                            firing, last_resolved)
            alert = firing.get(key)
            if alert is not None and alert["last_window_start"] + self.size + rule.resolve_after <= closed_until:
                end = alert["last_window_start"] + self.size + rule.resolve_after
                resolve_alert(self.conn, alert["id"], end, self.now)
                del firing[key]
            cursors[source] = closed_until.isoformat()
        self._save_cursors(cursors)
        return self.new_ids

    def _judge(
        self,
        source: str,
        window: datetime,
        posts: list[_Post],
        verdict: Verdict,
        firing: dict[str, dict[str, Any]],
        last_resolved: datetime | None,
    ) -> datetime | None:
        rule, key = self.rule, source[:10]
        alert = firing.get(key)
        if alert is not None and window <= alert["last_window_start"]:
            # Judged into this alert already: the cursors restart when the rule's
            # fingerprint changes, and a replayed window must not extend it again.
            return last_resolved
        if alert is not None:
            stale = alert["last_window_start"] + self.size + rule.resolve_after
            if window >= stale or (verdict.hit is False and window > alert["last_window_start"]):
                at = min(stale, window)
                resolve_alert(self.conn, alert["id"], at, self.now)
                del firing[key]
                alert, last_resolved = None, at
        if verdict.hit is not True:
            return last_resolved
        summary = f"{rule.name} ({rule.check}) on source {source}, {rule.window} window " \
                  f"{window:%Y-%m-%d %H:%M} UTC: {verdict.summary}"
        evidence = self._evidence(posts)
        if alert is not None:
            changes: dict[str, Any] = {"last_window_start": window, "updated_at": self.now}
            if verdict.value > alert["value"]:
                changes.update(value=verdict.value, baseline=verdict.baseline,
                               explanation=explain(summary, evidence, EVIDENCE_SEPARATOR))
                update_alert(self.conn, alert["id"], changes, evidence)
            else:
                update_alert(self.conn, alert["id"], changes)
            alert.update(changes)
            return last_resolved
        if last_resolved is not None and window < last_resolved + rule.cooldown:
            return last_resolved
        row = {
            "id": f"{rule.name}:{source}:{rule.window}:{window:%Y-%m-%dT%H:%MZ}",
            "rule": rule.name, "ticker": key, "window_size": rule.window,
            "window_start": window, "last_window_start": window, "severity": rule.severity,
            "value": verdict.value, "threshold": verdict.threshold, "baseline": verdict.baseline,
            "state": "firing", "fired_at": max(p.published_at for p in posts),
            "resolved_at": None, "updated_at": self.now,
            "explanation": explain(summary, evidence, EVIDENCE_SEPARATOR),
        }
        if insert_alert(self.conn, self.storage, row, evidence):
            firing[key] = row
            self.new_ids.append(row["id"])
            logger.info("model health alert fired: %s (%s)", row["id"], verdict.summary)
        return last_resolved


def evaluate_model_health(storage: Storage, rules: RuleSet) -> list[Alert]:
    """Judge the newly closed windows of every enabled model-health rule, per source.

    Args:
        storage: the database.
        rules: the rules in force (only ``model_health`` rules are read).

    Returns:
        The alerts that fired for the first time in this call, oldest first.

    Raises:
        StorageError: the database refused.
    """
    new_ids: list[str] = []
    for rule in rules.model_health:
        with storage.begin() as conn:
            new_ids.extend(_HealthRun(conn, storage, rule).run())
    return alert_records(storage, new_ids)

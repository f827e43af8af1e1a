"""Risk-event alerts: the first credible post naming a risk event fires, per ticker.

Per post, not per window. Each pass reads the scores stored since the rule's cursor
(``rule_cursors``, on ``scores.stored_at``, re-reading ``OVERLAP`` before it so a
transaction that committed late is not missed), keeps the posts whose title or text
names one of the rule's phrases (whole words, any case) and that are credible (see
``RiskEventRule``), and walks them in event-time order, per ticker:

- no alert firing: the post fires one. Its id is ``<rule>:<ticker>:1m:<minute>`` of the
  post's ``published_at``, so re-running never duplicates it.
- an alert firing: a new story (another near-duplicate cluster) joins it as evidence
  and raises its value (the number of distinct stories); a copy of a story the alert
  already holds only refreshes the copy counts.
- a copy of a story an earlier, resolved alert held raises nothing.
- an alert resolves ``resolve_after`` (event time) after its last matching post, once
  the ticker's stream has passed that time.

Every story an alert counts is recorded in ``alert_stories`` (the evidence keeps only
``explain_posts`` of them), and the value grows only by the stories a pass records there
for the first time. A pass that re-reads posts it has seen (the overlap, a repeated pass,
another monitor) therefore changes nothing, and writes nothing: each firing alert gets at
most one ``updated`` event per pass, and none when nothing shown in it changed.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from finpulse.schemas import Alert
from finpulse.storage import Storage, utcnow
from finpulse.storage import tables as t
from monitor.event_alerts import (
    alert_records,
    firing_alerts,
    insert_alert,
    read_cursor,
    resolve_alert,
    save_cursor,
    update_alert,
)
from monitor.evidence import (
    EVIDENCE_SEPARATOR,
    Evidence,
    cluster_key,
    evidence_for,
    explain,
    stored_pairs,
)
from monitor.rules import RiskEventRule, RuleSet

logger = logging.getLogger(__name__)

OVERLAP = timedelta(minutes=2)


def phrase_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    """A case-insensitive whole-word pattern for any of the phrases (spaces match any run)."""
    parts = sorted((r"\s+".join(map(re.escape, p.split())) for p in phrases), key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def matched_phrases(pattern: re.Pattern[str], text: str) -> list[str]:
    """The distinct phrases found in ``text``, lower case, in order of appearance."""
    return list(dict.fromkeys(" ".join(m.group(0).lower().split()) for m in pattern.finditer(text)))


def alert_id(rule: str, ticker: str, at: datetime) -> str:
    """The id of the risk-event alert a post published at ``at`` fires."""
    return f"{rule}:{ticker}:1m:{at:%Y-%m-%dT%H:%MZ}"


class _RiskRun:
    """One pass of one risk-event rule, inside one transaction."""

    def __init__(self, conn: sa.Connection, storage: Storage, rule: RiskEventRule) -> None:
        self.conn, self.storage, self.rule = conn, storage, rule
        self.pattern = phrase_pattern(rule.phrases)
        self.now = utcnow()
        self.new_ids: list[str] = []
        # Per firing alert id: the new stories joining it in this pass, and whether a copy
        # of a story it holds was read (its copy counts may have grown).
        self.joined: dict[str, list[dict[str, Any]]] = {}
        self.copied: set[str] = set()

    def _candidates(self, since: datetime | None, until: datetime) -> list[dict[str, Any]]:
        """Matching, credible (post, ticker) rows stored up to ``until``, in event-time order."""
        p, pt, s = t.posts, t.post_tickers, t.scores
        rule = self.rule
        lowered = [sa.func.lower(p.c.text), sa.func.lower(sa.func.coalesce(p.c.title, ""))]
        prefilter = sa.or_(*(col.contains(word) for col in lowered for word in rule.phrases))
        query = (
            sa.select(
                p.c.id, p.c.title, p.c.text, p.c.published_at, cluster_key().label("story"),
                pt.c.ticker, s.c.label, s.c.confidence, s.c.score, s.c.scored_at,
                s.c.model_version, s.c.stored_at,
            )
            .join(pt, pt.c.post_id == p.c.id)
            .join(s, sa.and_(s.c.post_id == p.c.id, s.c.role == t.LIVE))
            .where(prefilter, s.c.stored_at <= until)
        )
        if since is not None:
            query = query.where(s.c.stored_at >= since - OVERLAP)
        if rule.sources:
            query = query.where(p.c.source.in_(rule.sources))
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for row in self.conn.execute(query).mappings():
            key = (row["id"], row["ticker"])
            rank = (row["scored_at"], row["model_version"])
            if key not in latest or rank > latest[key]["rank"]:
                latest[key] = {**row, "rank": rank}
        out = []
        for row in latest.values():
            found = matched_phrases(self.pattern, f"{row['title'] or ''}\n{row['text']}")
            credible = row["label"] in rule.labels and row["confidence"] >= rule.min_confidence
            if found and credible:
                out.append({**row, "phrases": found})
        out.sort(key=lambda r: (r["published_at"], r["id"], r["ticker"]))
        return out

    def _alerted_stories(self, tickers: set[str]) -> set[tuple[str, str]]:
        """(ticker, story) pairs some alert of this rule already holds."""
        if not tickers:
            return set()
        al, st = t.alerts, t.alert_stories
        rows = self.conn.execute(
            sa.select(al.c.ticker, st.c.story)
            .join(st, st.c.alert_id == al.c.id)
            .where(al.c.rule == self.rule.name, al.c.ticker.in_(sorted(tickers)))
        )
        return {(ticker, story) for ticker, story in rows}

    def _record_stories(self, alert_id_: str, rows: list[dict[str, Any]]) -> int:
        """Record the stories of ``rows`` as counted by the alert; returns how many were new."""
        if not rows:
            return 0
        st = t.alert_stories
        stmt = (
            self.storage.insert(st)
            .values([
                {"alert_id": alert_id_, "story": r["story"], "post_id": r["id"]} for r in rows
            ])
            .on_conflict_do_nothing()
            .returning(st.c.story)
        )
        return len(self.conn.execute(stmt).all())

    def _summary(self, ticker: str, posts: list[tuple[str, float]], stories: int) -> str:
        """The alert in words: how many stories, which phrases, what made the first credible."""
        rule, p, s_ = self.rule, t.posts, t.scores
        ids = [post_id for post_id, _ in posts]
        rows = self.conn.execute(
            sa.select(p.c.id, p.c.title, p.c.text, p.c.published_at, s_.c.label,
                      s_.c.confidence, s_.c.scored_at, s_.c.model_version)
            .join(s_, sa.and_(s_.c.post_id == p.c.id, s_.c.role == t.LIVE))
            .where(p.c.id.in_(ids))
        ).mappings()
        latest: dict[str, Any] = {}
        for row in rows:
            if row["id"] not in latest or (row["scored_at"], row["model_version"]) > (
                latest[row["id"]]["scored_at"], latest[row["id"]]["model_version"]
            ):
                latest[row["id"]] = row
        phrases: list[str] = []
        for post_id in ids:
            row = latest[post_id]
            phrases += matched_phrases(self.pattern, f"{row['title'] or ''}\n{row['text']}")
        first = latest[ids[0]]
        noun = "story" if stories == 1 else "stories"
        return (
            f"{rule.name} on {ticker}: {stories} credible {noun} naming "
            f"{', '.join(repr(x) for x in dict.fromkeys(phrases))} (fires at 1; credible = "
            f"label {'/'.join(rule.labels)} with confidence >= {rule.min_confidence:g}, "
            f"not a copy of a story already alerted); first: {first['label']} at confidence "
            f"{first['confidence']:.2f}, published {first['published_at']:%Y-%m-%d %H:%M} UTC"
        )

    def _ranked(self, posts: list[tuple[str, float]]) -> list[Evidence]:
        """The first (triggering, most novel) post, then the most negative others."""
        rest = sorted(posts[1:], key=lambda p: (p[1], p[0]))
        return evidence_for(self.conn, (posts[:1] + rest)[: self.rule.explain_posts])

    def _fire(self, row: dict[str, Any]) -> dict[str, Any] | None:
        ticker, at = row["ticker"], row["published_at"]
        ident = alert_id(self.rule.name, ticker, at)
        posts = [(row["id"], row["score"])]
        alert = {
            "id": ident, "rule": self.rule.name, "ticker": ticker, "window_size": "1m",
            "window_start": at.replace(second=0, microsecond=0), "last_window_start": at,
            "severity": self.rule.severity, "value": 1.0, "threshold": 1.0, "baseline": None,
            "state": "firing", "fired_at": at, "resolved_at": None, "updated_at": self.now,
            "explanation": explain(
                self._summary(ticker, posts, 1), self._ranked(posts), EVIDENCE_SEPARATOR
            ),
        }
        if not insert_alert(self.conn, self.storage, alert, self._ranked(posts)):
            return None
        self._record_stories(ident, [row])
        self.new_ids.append(ident)
        logger.info("risk event alert fired: %s (%s)", ident, ", ".join(row["phrases"]))
        return alert

    def _join(self, alert: dict[str, Any], row: dict[str, Any]) -> None:
        """A new story joins a firing alert (written by ``_flush``)."""
        self.joined.setdefault(alert["id"], []).append(row)
        alert["last_window_start"] = max(alert["last_window_start"], row["published_at"])

    def _flush(self, alert: dict[str, Any]) -> None:
        """Write what this pass changed in a firing alert, as one ``updated`` event, if anything."""
        joined = self.joined.pop(alert["id"], [])
        copied = alert["id"] in self.copied
        self.copied.discard(alert["id"])
        if not joined and not copied:
            return
        al = t.alerts
        value = alert["value"]
        added = self._record_stories(alert["id"], joined)
        if added:
            # In SQL, so monitors adding different stories at once do not lose a count.
            value = self.conn.execute(
                sa.update(al).where(al.c.id == alert["id"])
                .values(value=al.c.value + added).returning(al.c.value)
            ).scalar_one()
        posts = stored_pairs(self.conn, alert["id"])
        held = {post_id for post_id, _ in posts}
        posts += [(r["id"], r["score"]) for r in joined if r["id"] not in held]
        evidence = self._ranked(posts)
        # The stored evidence holds at most explain_posts posts; the value counts them all.
        explanation = explain(
            self._summary(alert["ticker"], posts, int(value)), evidence, EVIDENCE_SEPARATOR
        )
        if not added and explanation == alert["explanation"]:
            return  # copies nobody sees counted, or stories another monitor recorded
        changes = {
            "value": value, "last_window_start": alert["last_window_start"],
            "explanation": explanation, "updated_at": self.now,
        }
        update_alert(self.conn, alert["id"], changes, evidence)
        alert.update(changes)

    def run(self) -> list[str]:
        rule = self.rule
        since = read_cursor(self.conn, rule.name)
        newest = self.conn.execute(
            sa.select(sa.func.max(t.scores.c.stored_at)).where(t.scores.c.role == t.LIVE)
        ).scalar()
        if newest is None:
            return []
        rows = self._candidates(since, newest)
        firing = firing_alerts(self.conn, rule.name)
        alerted = self._alerted_stories({r["ticker"] for r in rows} | set(firing))
        for row in rows:
            ticker, story = row["ticker"], row["story"]
            alert = firing.get(ticker)
            if alert is not None and row["published_at"] >= self._ends(alert):
                self._flush(alert)
                resolve_alert(self.conn, alert["id"], self._ends(alert), self.now)
                del firing[ticker]
                alert = None
            if (ticker, story) in alerted:
                if alert is not None:
                    self.copied.add(alert["id"])  # a copy: its counts may need a refresh
                continue
            alerted.add((ticker, story))
            if alert is not None:
                self._join(alert, row)
            else:
                fired = self._fire(row)
                if fired is not None:
                    firing[ticker] = fired
        for alert in firing.values():
            self._flush(alert)
        self._resolve_stale(firing)
        save_cursor(
            self.conn, self.storage, rule.name, window="1m",
            fingerprint=rule.fingerprint(), until=newest, now=self.now,
        )
        return self.new_ids

    def _ends(self, alert: dict[str, Any]) -> datetime:
        return alert["last_window_start"] + self.rule.resolve_after

    def _resolve_stale(self, firing: dict[str, dict[str, Any]]) -> None:
        """Resolve alerts whose ticker's stream has passed their end (event time)."""
        if not firing:
            return
        pt = t.post_tickers
        watermarks = dict(
            self.conn.execute(
                sa.select(pt.c.ticker, sa.func.max(pt.c.published_at))
                .where(pt.c.ticker.in_(sorted(firing)))
                .group_by(pt.c.ticker)
            ).all()
        )
        for ticker, alert in firing.items():
            mark = watermarks.get(ticker)
            if mark is not None and mark >= self._ends(alert):
                resolve_alert(self.conn, alert["id"], self._ends(alert), self.now)


def evaluate_risk_events(storage: Storage, rules: RuleSet) -> list[Alert]:
    """Run every enabled risk-event rule over the scores stored since its last pass.

    Args:
        storage: the database.
        rules: the rules in force (only ``risk_event`` rules are read).

    Returns:
        The alerts that fired for the first time in this call, oldest first.

    Raises:
        StorageError: the database refused.
    """
    new_ids: list[str] = []
    for rule in rules.risk_events:
        with storage.begin() as conn:
            new_ids.extend(_RiskRun(conn, storage, rule).run())
    return alert_records(storage, new_ids)

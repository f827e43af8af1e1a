"""What the report shows, read from the database through finpulse.storage.

The time range is event time (``published_at``). A relative ``--since 7d`` counts back from
now, unless the newest stored post is older than that (a replayed or demo database): then
it counts back from the newest post, so a report on old data is never empty.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from finpulse.errors import ConfigError
from finpulse.storage import Storage
from finpulse.storage import tables as t
from finpulse.storage.registry import ModelRegistry
from monitor.evidence import POSTS_SEPARATOR

_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class TimeRange:
    """The report's event-time range and how it was chosen."""

    start: datetime
    end: datetime
    note: str = ""


@dataclass(frozen=True)
class EvidencePost:
    post_id: str
    score: float
    headline: str
    url: str | None
    published_at: datetime


@dataclass(frozen=True)
class AlertRow:
    id: str
    rule: str
    ticker: str
    window: str
    severity: str
    state: str
    value: float
    threshold: float
    fired_at: datetime
    resolved_at: datetime | None
    summary: str
    evidence: list[EvidencePost] = field(default_factory=list)


@dataclass(frozen=True)
class ModelInfo:
    version: str
    base: str
    method: str
    status: str
    metrics: dict[str, Any]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class ReportData:
    """Everything the HTML needs."""

    range: TimeRange
    window: str
    series: dict[str, list[dict[str, Any]]]  # ticker -> [{start, mean_score, n, volume, negative_share}]
    alerts: list[AlertRow]
    model: ModelInfo | None
    posts: int
    scored: int
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def parse_when(text: str) -> datetime | timedelta:
    """``7d``/``24h``/``30m``/``2w`` (a duration) or an ISO date/time (UTC when no offset).

    Raises:
        ConfigError: neither.
    """
    match = _RELATIVE.match(text.strip().lower())
    if match:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since/--until: expected a duration like 7d or an ISO date, got {text!r}",
                          field="since") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def resolve_range(storage: Storage, since: str, until: str | None = None,
                  now: datetime | None = None) -> TimeRange:
    """Turn ``--since``/``--until`` into an event-time range (see the module docstring).

    Raises:
        ConfigError: a value cannot be parsed, or the range is empty.
    """
    now = now or datetime.now(timezone.utc)
    with storage.begin() as conn:
        newest = conn.execute(sa.select(sa.func.max(t.posts.c.published_at))).scalar_one_or_none()
    if isinstance(newest, datetime) and newest.tzinfo is None:
        newest = newest.replace(tzinfo=timezone.utc)
    end_value = parse_when(until) if until else None
    if isinstance(end_value, timedelta):
        raise ConfigError("--until takes a date, not a duration", field="until")
    start_value = parse_when(since)
    note = ""
    if isinstance(start_value, timedelta):
        end = end_value or now
        if end_value is None and newest is not None and newest < end - start_value:
            end = newest + timedelta(seconds=1)
            note = (f"the newest stored post is from {newest:%Y-%m-%d %H:%M} UTC, so the last "
                    f"{since} are counted back from it")
        start = end - start_value
    else:
        start, end = start_value, end_value or now
    if start >= end:
        raise ConfigError(f"empty range: {start:%Y-%m-%d %H:%M} is not before {end:%Y-%m-%d %H:%M}", field="since")
    return TimeRange(start=start, end=end, note=note)


def pick_window(span: timedelta) -> str:
    """The aggregate window that gives a readable chart over ``span``."""
    if span <= timedelta(hours=6):
        return "5m"
    return "1h"


def load_report_data(storage: Storage, when: TimeRange, model_dir: Path | None = None,
                     max_evidence: int = 5) -> ReportData:
    """Read the report's contents.

    Args:
        storage: the database.
        when: the event-time range.
        model_dir: a model directory whose manifest/metrics.json describe the model when the
            registry has no champion (a database filled by an older finpulse).
        max_evidence: evidence posts shown per alert.

    Raises:
        StorageError: a query failed.
    """
    window = pick_window(when.end - when.start)
    series: dict[str, list[dict[str, Any]]] = {}
    for agg in storage.aggregates(None, window, since=when.start, until=when.end):
        series.setdefault(agg.ticker, []).append({
            "start": agg.start, "mean_score": agg.mean_score, "n": agg.n,
            "volume": agg.volume, "negative_share": agg.negative_share,
        })
    a, ap, p = t.alerts, t.alert_posts, t.posts
    with storage.begin() as conn:
        rows = conn.execute(
            sa.select(a).where(a.c.fired_at >= when.start, a.c.fired_at < when.end)
            .order_by(a.c.fired_at.desc(), a.c.id)
        ).mappings().all()
        evidence: dict[str, list[EvidencePost]] = {}
        if rows:
            links = conn.execute(
                sa.select(ap.c.alert_id, ap.c.score, p.c.id, p.c.title, p.c.text, p.c.url, p.c.published_at)
                .join(p, p.c.id == ap.c.post_id)
                .where(ap.c.alert_id.in_([r["id"] for r in rows]))
                .order_by(ap.c.alert_id, ap.c.rank)
            )
            for alert_id, score, pid, title, text, url, published in links:
                posts = evidence.setdefault(alert_id, [])
                if len(posts) < max_evidence:
                    posts.append(EvidencePost(pid, score, (title or text).strip(), url, published))
        n_posts = conn.execute(
            sa.select(sa.func.count()).select_from(p)
            .where(p.c.published_at >= when.start, p.c.published_at < when.end)
        ).scalar_one()
        n_scored = conn.execute(
            sa.select(sa.func.count(sa.distinct(t.scores.c.post_id))).select_from(t.scores.join(p))
            .where(p.c.published_at >= when.start, p.c.published_at < when.end)
        ).scalar_one()
    alerts = [
        AlertRow(
            id=r["id"], rule=r["rule"], ticker=r["ticker"], window=r["window_size"], severity=r["severity"],
            state=r["state"], value=r["value"], threshold=r["threshold"], fired_at=r["fired_at"],
            resolved_at=r["resolved_at"], summary=r["explanation"].partition(POSTS_SEPARATOR)[0],
            evidence=evidence.get(r["id"], []),
        )
        for r in rows
    ]
    return ReportData(range=when, window=window, series=series, alerts=alerts,
                      model=model_info(storage, model_dir), posts=int(n_posts), scored=int(n_scored))


def model_info(storage: Storage, model_dir: Path | None) -> ModelInfo | None:
    """The champion from the registry (else the model in ``model_dir``), with its quality figures."""
    champion = ModelRegistry(storage).champion()
    path: Path | None = Path(champion.artifact_path) if champion else model_dir
    manifest = _read_json(path / "manifest.json") if path else {}
    full = _read_json(path / "metrics.json") if path else {}
    if champion is not None:
        version, base, method, status = champion.version, champion.base, champion.method, champion.status
        metrics = dict(champion.metrics or manifest.get("metrics", {}))
    elif manifest:
        version, base, method, status = (str(manifest.get("version", "?")), str(manifest.get("base", "")),
                                         str(manifest.get("method", "")), "bundled")
        metrics = dict(manifest.get("metrics", {}))
    else:
        return None
    per_class = full.get("test", {}).get("per_class", {}) if isinstance(full.get("test"), dict) else {}
    return ModelInfo(version=version, base=base, method=method, status=status, metrics=metrics, per_class=per_class)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}

"""The shadow model against the live scores: agreement, confidence and label mix per source.

Each shadow score (``scores.role = 'shadow'``, ``finpulse.services.shadow``) is paired with
its post's live score, the latest one as the aggregates take it, and the pairs are counted
in SQL per (shadow version, source, live version).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from finpulse.storage import tables as t
from finpulse.storage.database import Storage

LABELS = ("negative", "neutral", "positive")


def shadow_report(
    storage: Storage,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    version: str | None = None,
) -> list[dict[str, Any]]:
    """How the shadow model compares with the live scores, per shadow version and source.

    Each shadow score is paired with the post's live score (the latest, as the aggregates
    take it). Agreement is the share of posts where both chose the same label.

    Args:
        storage: the database.
        since: shadow scores stored at or after this time.
        until: ...and before this time.
        version: one shadow version (None: every version that has shadow scores).

    Returns:
        One dict per (shadow version, source), ordered by version then source: ``version``,
        ``source``, ``n``, ``agreement``, ``live_versions`` (the champions it was compared
        with), and ``live``/``shadow``, each ``{"mean_confidence", "labels"}`` where
        ``labels`` holds each label's share.
    """
    s, p = t.scores, t.posts
    sh, lv = s.alias("sh"), s.alias("lv")
    shadow_rows = sa.select(sh.c.post_id, sh.c.model_version, sh.c.label, sh.c.confidence).where(
        sh.c.role == "shadow"
    )
    if since is not None:
        shadow_rows = shadow_rows.where(sh.c.stored_at >= since)
    if until is not None:
        shadow_rows = shadow_rows.where(sh.c.stored_at < until)
    if version is not None:
        shadow_rows = shadow_rows.where(sh.c.model_version == version)
    shadow = shadow_rows.subquery("shadow")
    rank = sa.func.row_number().over(
        partition_by=lv.c.post_id, order_by=(lv.c.scored_at.desc(), lv.c.model_version.desc())
    )
    live = (
        sa.select(lv.c.post_id, lv.c.model_version, lv.c.label, lv.c.confidence, rank.label("rn"))
        .where(lv.c.role == t.LIVE, lv.c.post_id.in_(sa.select(shadow.c.post_id)))
        .subquery("live")
    )

    def count_label(column: Any, label: str) -> Any:
        return sa.func.sum(sa.case((column == label, 1), else_=0))

    query = (
        sa.select(
            shadow.c.model_version,
            p.c.source,
            live.c.model_version,
            sa.func.count(),
            sa.func.sum(sa.case((live.c.label == shadow.c.label, 1), else_=0)),
            sa.func.sum(live.c.confidence),
            sa.func.sum(shadow.c.confidence),
            *(count_label(live.c.label, label) for label in LABELS),
            *(count_label(shadow.c.label, label) for label in LABELS),
        )
        .select_from(shadow)
        .join(live, sa.and_(live.c.post_id == shadow.c.post_id, live.c.rn == 1))
        .join(p, p.c.id == shadow.c.post_id)
        .group_by(shadow.c.model_version, p.c.source, live.c.model_version)
    )
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    with storage.begin() as conn:
        for shadow_version, source, live_version, n, agree, live_conf, shadow_conf, *labels in (
            conn.execute(query)
        ):
            entry = merged.setdefault((shadow_version, source), {
                "n": 0, "agree": 0, "live_conf": 0.0, "shadow_conf": 0.0, "live_versions": set(),
                "live_labels": [0, 0, 0], "shadow_labels": [0, 0, 0],
            })
            entry["n"] += int(n)
            entry["agree"] += int(agree)
            entry["live_conf"] += float(live_conf)
            entry["shadow_conf"] += float(shadow_conf)
            entry["live_versions"].add(live_version)
            for i in range(3):
                entry["live_labels"][i] += int(labels[i])
                entry["shadow_labels"][i] += int(labels[3 + i])
    report = []
    for (shadow_version, source), e in sorted(merged.items()):
        n = e["n"]
        report.append({
            "version": shadow_version,
            "source": source,
            "n": n,
            "agreement": e["agree"] / n,
            "live_versions": sorted(e["live_versions"]),
            "live": {"mean_confidence": e["live_conf"] / n,
                     "labels": {lab: c / n for lab, c in zip(LABELS, e["live_labels"])}},
            "shadow": {"mean_confidence": e["shadow_conf"] / n,
                       "labels": {lab: c / n for lab, c in zip(LABELS, e["shadow_labels"])}},
        })
    return report

"""Builders of scored posts for the storage and monitor tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from finpulse.schemas import ScoredPost

T0 = datetime(2024, 3, 4, tzinfo=timezone.utc)  # a Monday, 00:00 UTC: aligned to every window


def scored(
    post_id: str,
    at: datetime | timedelta,
    tickers: tuple[str, ...] = ("ACME",),
    score: float = 0.0,
    *,
    label: str | None = None,
    confidence: float = 0.8,
    version: str = "v1",
    scored_at: datetime | None = None,
    text: str | None = None,
) -> ScoredPost:
    """A scored post; ``at`` may be an offset from ``T0``. The label follows the score's sign."""
    published = T0 + at if isinstance(at, timedelta) else at
    if label is None:
        label = "negative" if score < -0.2 else "positive" if score > 0.2 else "neutral"
    neg = max(-score, 0.0)
    pos = max(score, 0.0)
    return ScoredPost(
        id=post_id,
        source="news",
        text=text or f"post {post_id} about {', '.join(tickers)}",
        published_at=published,
        tickers=tickers,
        label=label,
        score=score,
        probabilities={"negative": neg, "neutral": 1.0 - neg - pos, "positive": pos},
        confidence=confidence,
        model_version=version,
        scored_at=scored_at or published + timedelta(seconds=1),
    )

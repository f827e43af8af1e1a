"""The frozen records that flow between the stages.

``ingest``, ``models`` and ``monitor`` never import each other; they exchange these.
Input JSON on the raw topics has the shape of ``Post``; ``finpulse.scored`` carries
``ScoredPost``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

Label = Literal["negative", "neutral", "positive"]
LABELS: tuple[Label, ...] = ("negative", "neutral", "positive")
Window = Literal["1m", "5m", "1h", "1d"]
WINDOW_SECONDS: dict[str, int] = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
Severity = Literal["info", "warning", "critical"]
AlertState = Literal["firing", "resolved"]

_TICKER = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Post(Record):
    """A raw news item or social post, as published on ``finpulse.news``/``finpulse.social``."""

    id: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_\-]*$")
    text: str = Field(min_length=1)
    title: str | None = None
    url: str | None = Field(default=None, max_length=2000)
    author: str | None = Field(default=None, max_length=200)
    published_at: AwareDatetime
    tickers: tuple[str, ...] = ()
    lang: str | None = Field(default=None, max_length=16)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        return value

    @field_validator("tickers")
    @classmethod
    def _tickers_upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(dict.fromkeys(t.strip().lstrip("$").upper() for t in value))
        for ticker in cleaned:
            if not _TICKER.match(ticker):
                raise ValueError(f"invalid ticker {ticker!r}")
        return cleaned


class Prediction(Record):
    """One classifier output: what the inference engine returns per text."""

    label: Label
    score: float = Field(ge=-1.0, le=1.0)
    probabilities: dict[Label, float]
    confidence: float = Field(ge=0.0, le=1.0)


class ScoredPost(Post):
    """A post with its sentiment; ``score`` = P(positive) - P(negative)."""

    label: Label
    score: float = Field(ge=-1.0, le=1.0)
    probabilities: dict[Label, float]
    confidence: float = Field(ge=0.0, le=1.0)
    model_version: str = Field(min_length=1)
    scored_at: AwareDatetime
    # Near-duplicate cluster (the id of the story's first post); None = not clustered.
    cluster_id: str | None = Field(default=None, max_length=200)

    @classmethod
    def from_prediction(
        cls, post: Post, prediction: Prediction, *, model_version: str, scored_at: datetime
    ) -> ScoredPost:
        return cls(
            **post.model_dump(),
            **prediction.model_dump(),
            model_version=model_version,
            scored_at=scored_at,
        )


class WindowAggregate(Record):
    """Sentiment of one ticker over one closed or open time window.

    ``volume`` is the post rate in posts per minute, comparable across window sizes.
    """

    ticker: str
    window: Window
    start: AwareDatetime
    n: int = Field(ge=0)
    mean_score: float
    negative_share: float = Field(ge=0.0, le=1.0)
    volume: float = Field(ge=0.0)
    weighted_score: float


class Alert(Record):
    """An alert raised by a rule for one ticker and window."""

    id: str
    rule: str
    ticker: str
    window: Window
    severity: Severity
    value: float
    threshold: float
    baseline: float | None = None
    state: AlertState
    fired_at: AwareDatetime
    resolved_at: AwareDatetime | None = None
    explanation: str
    post_ids: tuple[str, ...] = ()

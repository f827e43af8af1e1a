"""Request and response bodies of the API (they make up its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from finpulse.api.params import Name, Text, Ticker

Severity = Literal["info", "warning", "critical"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(_Out):
    status: Literal["ok"]
    database: str


class SentimentPoint(_Out):
    ticker: str
    window: str
    start: datetime
    n: int
    n_negative: int
    mean_score: float
    weighted_score: float
    negative_share: float
    volume: float


class PostOut(_Out):
    id: str
    source: str
    published_at: datetime
    tickers: list[str]
    title: str | None
    text: str
    url: str | None
    author: str | None
    label: str
    score: float
    confidence: float
    probabilities: dict[str, float]
    model_version: str
    role: Literal["live", "shadow", "rescore"] = Field(
        description="live: what alerts used; shadow, rescore: another version's view")
    scored_at: datetime


class AlertOut(_Out):
    id: str
    rule: str
    ticker: str
    window: str
    severity: str
    state: str
    value: float
    threshold: float
    baseline: float | None
    fired_at: datetime
    resolved_at: datetime | None
    updated_at: datetime
    explanation: str
    acked_by: str | None
    acked_at: datetime | None
    ack_comment: str | None


class SubscriptionOut(_Out):
    id: str
    name: str
    channel: str
    target: str
    tickers: list[str]
    rules: list[str]
    sources: list[str]
    min_severity: str
    active: bool
    created_at: datetime


class SubscriptionCreated(SubscriptionOut):
    secret: str | None = Field(description="The webhook signing secret; shown only here.")


class DeliveryOut(_Out):
    id: str
    subscription_id: str
    subscription_name: str
    channel: str
    target: str
    alert_id: str
    kind: str
    status: str
    attempts: int
    last_error: str | None
    event_at: datetime
    created_at: datetime
    delivered_at: datetime | None


class KeyOut(_Out):
    id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(_Out):
    id: str
    name: str
    role: str
    key: str = Field(description="The key itself; shown only here.")


class FeedbackOut(_Out):
    id: int
    post_id: str
    label: str
    author: str
    comment: str | None
    created_at: datetime


class ModelSide(_Out):
    mean_confidence: float
    labels: dict[str, float] = Field(description="Each label's share of the posts.")


class ShadowSource(_Out):
    version: str = Field(description="The shadow model version.")
    source: str
    n: int = Field(description="Posts scored by both.")
    agreement: float = Field(description="Share of posts where both chose the same label.")
    live_versions: list[str] = Field(description="The live (champion) versions compared with.")
    live: ModelSide
    shadow: ModelSide


class ShadowReport(_Out):
    champion: str | None
    shadow: str | None = Field(description="The version the scorers run in shadow now.")
    since: datetime | None
    until: datetime | None
    items: list[ShadowSource]


class RetrainRunOut(_Out):
    id: str
    started_at: datetime
    finished_at: datetime | None
    trigger: str = Field(description="manual, schedule, or model_health:<alert id>")
    champion: str
    challenger: str | None
    decision: Literal["promoted", "rejected", "failed"] | None = Field(
        description="null while the run is in progress, or if its process died")
    reason: str | None
    counts: dict[str, int] = Field(description="examples per source (docs/retraining.md)")
    gold: dict[str, Any] = Field(description="champion's and challenger's gold-set metrics")
    feedback: dict[str, Any] = Field(description="the same on the held-back feedback")
    seconds: float | None


class SentimentPage(_Out):
    items: list[SentimentPoint]
    next_cursor: str | None


class PostPage(_Out):
    items: list[PostOut]
    next_cursor: str | None


class AlertPage(_Out):
    items: list[AlertOut]
    next_cursor: str | None


class SubscriptionPage(_Out):
    items: list[SubscriptionOut]
    next_cursor: str | None


class DeliveryPage(_Out):
    items: list[DeliveryOut]
    next_cursor: str | None


class RetrainRunPage(_Out):
    items: list[RetrainRunOut]
    next_cursor: str | None


class KeyPage(_Out):
    items: list[KeyOut]
    next_cursor: str | None


class AckIn(_In):
    comment: Annotated[Text, Field(max_length=2000)] | None = None


class FeedbackIn(_In):
    post_id: Annotated[Text, Field(min_length=1, max_length=200)]
    label: Literal["negative", "neutral", "positive"]
    comment: Annotated[Text, Field(max_length=2000)] | None = None


class SubscriptionIn(_In):
    channel: Literal["webhook", "email", "slack", "kafka"]
    target: Annotated[Text, Field(min_length=1, max_length=2000)] | None = Field(
        default=None, description="URL (webhook, slack), address (email) or topic (kafka)."
    )
    name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    tickers: Annotated[list[Ticker], Field(max_length=500)] = []
    rules: Annotated[list[Name], Field(max_length=100)] = []
    sources: Annotated[list[Name], Field(max_length=100)] = []
    min_severity: Severity = "info"
    secret: Annotated[Text, Field(min_length=16, max_length=200)] | None = None
    active: bool = True


class KeyIn(_In):
    role: Literal["reader", "analyst", "admin"]
    name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None

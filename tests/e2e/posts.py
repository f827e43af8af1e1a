"""Test streams (headlines with a calm baseline and one negative burst) and a topic reader."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from kafka import KafkaConsumer

from finpulse.schemas import Post
from finpulse.settings import KafkaSettings

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)

CALM = (
    "{name} to present at investor conference next week",
    "{name} declares regular quarterly dividend",
    "{name} reports third-quarter results in line with expectations",
    "{name} names new chief financial officer",
    "{name} opens new regional office in Austin",
    "{name} shares edge higher after analyst upgrade",
    "{name} completes previously announced acquisition",
    "{name} schedules earnings call for Thursday",
)
BAD_NEWS = (
    "{name} shares plunge after regulators ground its flagship jet",
    "{name} slashes full-year outlook as orders collapse",
    "{name} faces federal probe over safety failures, stock tumbles",
    "{name} cut to sell at Goldman on mounting losses",
    "{name} suspends deliveries after new defect found; shares sink",
    "{name} posts bigger-than-expected quarterly loss, burns cash",
    "{name} warns of layoffs as crisis deepens",
    "{name} stock hits lowest level in a decade after crash report",
)
MALFORMED: dict[str, bytes] = {
    "not_json": b"{this is not json",
    "not_utf8": b"\xff\xfe\xfa garbage",
    "invalid": json.dumps({"id": "m-1", "source": "news", "published_at": "2026-11-02T09:00:00Z"}).encode(),
    "empty_text": json.dumps(
        {"id": "m-2", "source": "news", "text": "   ", "published_at": "2026-11-02T09:00:00Z"}
    ).encode(),
    "bad_timestamp": json.dumps(
        {"id": "m-3", "source": "news", "text": "Naive time", "published_at": "2026-11-02 09:00"}
    ).encode(),
}


def calm_then_burst(
    hours: int = 12, per_hour: int = 4, burst_ticker: str = "BA", burst_name: str = "Boeing",
) -> tuple[list[Post], list[Post]]:
    """Return (baseline posts for three companies, a burst of bad news for ``burst_ticker``)."""
    companies = (("AAPL", "Apple"), ("MSFT", "Microsoft"), (burst_ticker, burst_name))
    baseline: list[Post] = []
    for hour in range(hours):
        for i in range(per_hour):
            for ticker, name in companies:
                text = CALM[(hour * per_hour + i) % len(CALM)].format(name=name)
                baseline.append(Post(
                    id=f"calm-{ticker}-{hour}-{i}", source="news", text=text,
                    published_at=T0 + timedelta(hours=hour, minutes=i * 60 // per_hour + 1),
                    tickers=(ticker,),
                ))
    burst_at = T0 + timedelta(hours=hours, minutes=5)
    burst = [
        Post(
            id=f"burst-{burst_ticker}-{i}", source="social" if i % 2 else "news",
            text=BAD_NEWS[i % len(BAD_NEWS)].format(name=burst_name),
            published_at=burst_at + timedelta(minutes=i * 2),
            tickers=() if i % 3 == 0 else (burst_ticker,),  # some rely on entity extraction
        )
        for i in range(16)
    ]
    return baseline, burst


def drain(kafka: KafkaSettings, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    records = []
    try:
        for record in consumer:
            records.append(record)
            if len(records) >= expected:
                break
    finally:
        consumer.close()
    return records

"""End to end on real services: broker -> scorer -> PostgreSQL/SQLite -> aggregates -> alerts."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from finpulse.metrics import Metrics
from finpulse.services.monitor import MonitorService
from finpulse.services.scorer import ScorerService, load_engine
from finpulse.settings import MonitorSettings, Settings
from finpulse.storage import Storage, utcnow
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from models.inference import SentimentEngine
from monitor.rules import RuleSet
from monitor.watermark import partition_watermark
from tests.e2e.posts import MALFORMED, calm_then_burst, drain

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def engine() -> SentimentEngine:
    """The model the scorer would serve: FINPULSE_MODEL__PATH if set, else the bundled default."""
    return load_engine(Settings.load(), Settings.load().model.path)


@pytest.mark.parametrize("db", ["sqlite_url", pytest.param("postgres_url", marks=pytest.mark.postgres)])
def test_every_post_stored_once_malformed_in_dlq_and_burst_alerted(request, db, kafka_settings, engine):
    url = request.getfixturevalue(db)
    settings = Settings.load(
        database_url=url,
        kafka=kafka_settings.model_dump(),
        scorer={"max_batch_size": 32, "max_wait_ms": 200},
        metrics={"enabled": False},
    )
    ensure_topics(settings.kafka)
    baseline, burst = calm_then_burst()
    # An hour after the burst: the monitor judges closed windows only (no early firing).
    trailing = [p for p in calm_then_burst(hours=14)[0] if "-13-" in p.id]
    posts = baseline + burst + trailing
    with PostProducer(settings.kafka) as producer:
        for post in posts[: len(posts) // 2]:
            producer.publish_post(post)
        for payload in MALFORMED.values():
            producer.publish_raw(settings.kafka.news_topic, payload)
        for post in posts[len(posts) // 2 :]:
            producer.publish_post(post)
        # The same posts again: redelivery must not create duplicates.
        for post in burst[:5]:
            producer.publish_post(post)
        producer.flush()
    total = len(posts) + len(MALFORMED) + 5

    storage = Storage(url)
    storage.migrate()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    service = ScorerService(settings, engine=engine, storage=storage, metrics=metrics)
    try:
        stats = service.run(threading.Event(), until_consumed=total)
    finally:
        service.close()

    assert stats.invalid == len(MALFORMED)
    assert storage.count_posts() == len(posts)
    assert storage.count_scores() == len(posts)
    stored = {p.id: p for p in storage.scores(limit=10_000)}
    assert set(stored) == {p.id for p in posts}
    assert all(p.model_version == engine.version for p in stored.values())
    assert all(-1.0 <= p.score <= 1.0 for p in stored.values())
    assert all("BA" in stored[p.id].tickers for p in burst), "entity extraction found Boeing"
    # Near-duplicate clusters (ingest/dedup.py): every post has one; the burst cycles through
    # a few texts, so its copies share clusters, each named by a post of the burst.
    assert all(p.cluster_id for p in stored.values())
    burst_clusters = {stored[p.id].cluster_id for p in burst}
    assert len(burst_clusters) < len(burst) and burst_clusters <= {p.id for p in burst}
    negative = sum(stored[p.id].label == "negative" for p in burst)
    assert negative >= len(burst) * 0.75, "the bundled model reads the burst as bad news"

    dead = drain(settings.kafka, settings.kafka.dlq_topic, len(MALFORMED))
    reasons = sorted(dict(r.headers)["reason"].decode() for r in dead)
    assert reasons == sorted(MALFORMED)
    assert {r.value for r in dead} == set(MALFORMED.values())

    scored = drain(settings.kafka, settings.kafka.scored_topic, len(posts) + 5)
    assert {json.loads(r.value)["id"] for r in scored} == set(stored)

    assert registry.get_sample_value("finpulse_scorer_posts_scored_total") == len(posts) + 5
    assert sum(
        registry.get_sample_value("finpulse_ingest_messages_invalid_total", {"reason": r}) or 0
        for r in MALFORMED
    ) == len(MALFORMED)

    assert registry.get_sample_value("finpulse_scorer_consumer_lag_messages") == 0

    # The stream has ended: once every partition has been idle for a second, the watermark
    # reaches the end of the stream and the burst's hour closes.
    monitor = MonitorService(storage, RuleSet.load(), metrics, MonitorSettings(idle_partition_s=1))
    deadline = time.monotonic() + 30
    while True:
        with storage.begin() as conn:
            mark = partition_watermark(conn, utcnow(), timedelta(seconds=1))
        if mark is not None and mark >= max(p.published_at for p in posts):
            break
        assert time.monotonic() < deadline, "partitions never went idle"
        time.sleep(0.1)
    result = monitor.run_once()
    assert storage.aggregates("BA", "1h")
    fired = [a for a in result.fired if a.ticker == "BA"]
    assert {a.rule for a in fired} >= {"sentiment_drop", "negative_volume_spike"}
    assert all(set(a.post_ids) <= {p.id for p in burst} and a.post_ids for a in fired)
    assert not [a for a in result.fired if a.ticker in ("AAPL", "MSFT")]
    for alert in fired:
        assert registry.get_sample_value(
            "finpulse_monitor_alerts_fired_total", {"rule": alert.rule, "severity": alert.severity}
        ) == 1
    firing = sum(a.state == "firing" for a in storage.alerts())
    assert firing == sum(
        registry.get_sample_value("finpulse_monitor_alerts_firing", {"rule": r.name}) for r in RuleSet.load().rules
    )
    assert MonitorService(storage, RuleSet.load(), metrics).run_once().fired == []
    storage.dispose()

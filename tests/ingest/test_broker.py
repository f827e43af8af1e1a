"""The embedded broker, topic creation and the producer's routing, on the real Tansu binary."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from finpulse.errors import ConfigError, IngestError
from finpulse.schemas import Prediction, ScoredPost
from finpulse.settings import KafkaSettings
from ingest.broker import EmbeddedBroker
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from tests.ingest.kafka_io import connections_to, make_post, read_topic


def _partitions(kafka: KafkaSettings) -> dict[str, int]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    try:
        topics = (kafka.news_topic, kafka.social_topic, kafka.scored_topic, kafka.dlq_topic)
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
    finally:
        consumer.close()


def test_ensure_topics_creates_all_topics_once(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=2)
    ensure_topics(kafka_settings, partitions=5)  # idempotent: existing topics are kept
    assert set(_partitions(kafka_settings).values()) == {2}


def test_ensure_topics_needs_a_broker() -> None:
    with pytest.raises(ConfigError, match="FINPULSE_KAFKA__BOOTSTRAP_SERVERS"):
        ensure_topics(KafkaSettings())


def test_broker_starts_and_stops() -> None:
    with EmbeddedBroker() as broker:
        assert broker.running
        assert connections_to(broker.port) == 0, "the readiness probe left a connection open"
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        ensure_topics(kafka, partitions=1)
        assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    assert not broker.running
    broker.stop()  # a second stop is harmless


def test_broker_refuses_a_port_in_use(broker: str) -> None:
    port = int(broker.rsplit(":", 1)[1])
    with pytest.raises(IngestError, match=f"port {port}"):
        EmbeddedBroker(port).start()


def test_producer_routes_by_source_and_keys_by_first_ticker(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=1)
    news = make_post(1, source="news", tickers=("AAPL", "MSFT"))
    social = make_post(2, source="reddit")
    scored = ScoredPost.from_prediction(
        news,
        Prediction(
            label="positive",
            score=0.5,
            probabilities={"negative": 0.1, "neutral": 0.3, "positive": 0.6},
            confidence=0.6,
        ),
        model_version="m-1",
        scored_at=datetime(2024, 5, 1, tzinfo=timezone.utc),
    )
    with PostProducer(kafka_settings) as producer:
        producer.publish_post(news)
        producer.publish_post(social)
        producer.publish_scored(scored)
        producer.flush(timeout=30)
    [news_record] = read_topic(kafka_settings, kafka_settings.news_topic, 1)
    [social_record] = read_topic(kafka_settings, kafka_settings.social_topic, 1)
    [scored_record] = read_topic(kafka_settings, kafka_settings.scored_topic, 1)
    assert news_record.key == b"AAPL" and json.loads(news_record.value)["id"] == news.id
    assert social_record.key == social.id.encode()
    assert ScoredPost.model_validate_json(scored_record.value) == scored


def test_publishing_an_oversized_message_raises_ingest_error(kafka_settings: KafkaSettings) -> None:
    with PostProducer(kafka_settings, max_request_size=1024) as producer:
        with pytest.raises(IngestError, match=kafka_settings.news_topic):
            producer.publish_raw(kafka_settings.news_topic, b"x" * 4096)

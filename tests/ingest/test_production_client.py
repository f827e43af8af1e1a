"""The Kafka client set for production: any producer's compression, big messages, group membership."""

from __future__ import annotations

import json

import pytest

from finpulse.settings import KafkaSettings
from ingest.consumer import PostConsumer
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from tests.ingest.kafka_io import make_post, poll_until, read_topic, wait_for_assignment


def _kafka_topic_partitions(kafka: KafkaSettings) -> dict[str, int]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    try:
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in kafka.raw_topics}
    finally:
        consumer.close()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_posts_from_a_confluent_kafka_producer_are_read_whatever_the_compression(
    kafka_settings: KafkaSettings, codec: str
) -> None:
    from confluent_kafka import Producer

    ensure_topics(kafka_settings, partitions=1)
    producer = Producer({"bootstrap.servers": kafka_settings.bootstrap_servers,
                         "compression.type": codec, "linger.ms": 50})
    for i in range(20):
        producer.produce(kafka_settings.news_topic, make_post(i).model_dump_json().encode())
    assert producer.flush(30) == 0
    with PostConsumer(kafka_settings, max_text_chars=200) as consumer:
        batches = poll_until(consumer, lambda bs: sum(len(b) for b in bs) >= 20)
        consumer.commit(batches[-1])
    posts = [c.post.id for b in batches for c in b.posts]
    assert posts == [f"post-{i}" for i in range(20)]
    assert not any(b.invalid for b in batches)


def test_a_5_mb_message_is_fetched_and_refused_as_oversized(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=1)
    big = json.dumps({"id": "big", "source": "news", "text": "x" * 5_000_000,
                      "published_at": "2024-05-01T00:00:00Z"}).encode()
    with PostProducer(kafka_settings, max_request_size=8 * 1024 * 1024) as producer:
        producer.publish_raw(kafka_settings.news_topic, big)
        producer.publish_post(make_post(1))
        producer.flush()
    with PostConsumer(kafka_settings, max_text_chars=20000, max_message_bytes=1024 * 1024) as consumer:
        batches = poll_until(consumer, lambda bs: sum(len(b) for b in bs) >= 2)
    assert [e.reason for b in batches for e in b.invalid] == ["oversized"]
    assert [c.post.id for b in batches for c in b.posts] == ["post-1"]
    (letter,) = read_topic(kafka_settings, kafka_settings.dlq_topic, 1)
    headers = dict(letter.headers)
    assert headers["truncated"] == b"true" and headers["original_bytes"] == str(len(big)).encode()
    assert letter.value == big[: len(letter.value)] and len(letter.value) == 64 * 1024


def test_keep_alive_holds_the_group_past_the_poll_interval(kafka_settings: KafkaSettings) -> None:
    """Waiting out an outage with keep_alive keeps the partitions: the late commit succeeds."""
    kafka = kafka_settings.model_copy(update={"max_poll_interval_ms": 2000})
    ensure_topics(kafka, partitions=1)
    with PostConsumer(kafka, max_text_chars=200) as consumer:
        wait_for_assignment(consumer)
        with PostProducer(kafka) as producer:
            for i in range(3):
                producer.publish_post(make_post(i))
            producer.flush()
        (batch,) = poll_until(consumer, lambda bs: sum(len(b) for b in bs) >= 3)
        assigned = consumer.assignment()
        consumer.keep_alive(4.0)  # twice max_poll_interval_ms
        assert consumer.assignment() == assigned
        consumer.commit(batch)
    with PostConsumer(kafka, max_text_chars=200) as again:
        wait_for_assignment(again)  # nothing is delivered again: the commit counted


def test_topics_get_their_partitions_from_settings(kafka_settings: KafkaSettings) -> None:
    kafka = kafka_settings.model_copy(update={"topic_partitions": 6})
    ensure_topics(kafka)
    assert _kafka_topic_partitions(kafka) == {kafka.news_topic: 6, kafka.social_topic: 6}


def _committed(kafka: KafkaSettings) -> int | None:
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=kafka.group_id,
                           enable_auto_commit=False)
    try:
        return reader.committed(TopicPartition(kafka.news_topic, 0))
    finally:
        reader.close()


def test_a_rebalance_commits_durable_batches_before_revoking(kafka_settings: KafkaSettings) -> None:
    """A batch stored but not yet committed (its commit waits out an outage) is committed on revoke."""
    import time

    ensure_topics(kafka_settings, partitions=1)
    with PostConsumer(kafka_settings, max_text_chars=200) as first:
        wait_for_assignment(first)
        with PostProducer(kafka_settings) as producer:
            for i in range(3):
                producer.publish_post(make_post(i))
            producer.flush()
        (batch,) = poll_until(first, lambda bs: sum(len(b) for b in bs) >= 3)
        first.mark_durable(batch)
        with PostConsumer(kafka_settings, max_text_chars=200) as second:
            redelivered = []
            deadline = time.monotonic() + 30
            while _committed(kafka_settings) != 3 and time.monotonic() < deadline:
                first.keep_alive(0.3)  # the first member waits (e.g. on the database) yet rejoins
                redelivered += second.poll_batch(10, 300).posts
            assert _committed(kafka_settings) == 3
            redelivered += second.poll_batch(10, 1000).posts
            assert redelivered == []

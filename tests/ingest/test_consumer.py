"""PostConsumer on the real broker: batches, the dead-letter topic, commits and resuming."""

from __future__ import annotations

import json

import pytest

from finpulse.errors import IngestError
from finpulse.settings import KafkaSettings
from ingest.consumer import PostConsumer
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from tests.ingest.kafka_io import make_post, poll_until, read_topic, wait_for_assignment

MAX_TEXT = 200


def _raw(**fields: object) -> bytes:
    base = {"id": "bad", "source": "social", "text": "fine", "published_at": "2024-05-01T00:00:00Z"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


MALFORMED = {
    "not_json": b"this is not json",
    "not_utf8": b'{"id": "x", "text": "\xc3\x28"}',
    "invalid": _raw(text=None),
    "empty_text": _raw(text="   "),
    "oversized": _raw(text="z" * (MAX_TEXT + 1)),
    "bad_timestamp": _raw(published_at="2024-05-01T00:00:00"),
}


def _count(batches) -> int:
    return sum(len(b) for b in batches)


def _consumer(kafka: KafkaSettings) -> PostConsumer:
    return PostConsumer(kafka, max_text_chars=MAX_TEXT)


def test_valid_posts_come_out_once_and_bad_ones_land_on_the_dlq(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=3)
    n_valid = 30
    with PostProducer(kafka_settings) as producer:
        for i in range(n_valid):
            producer.publish_post(make_post(i, source="news" if i % 2 else "social"))
            if i % 5 == 0:  # malformed messages interleaved with good ones, on both topics
                reason = list(MALFORMED)[(i // 5) % len(MALFORMED)]
                topic = kafka_settings.news_topic if i % 2 else kafka_settings.social_topic
                producer.publish_raw(topic, MALFORMED[reason], key=reason.encode())
        producer.flush()
    total = n_valid + 6

    with _consumer(kafka_settings) as consumer:
        batches = poll_until(consumer, lambda bs: _count(bs) >= total, max_records=7)
        for batch in batches:
            consumer.commit(batch)
    posts = [c for b in batches for c in b.posts]
    invalid = [m for b in batches for m in b.invalid]
    assert sorted(c.post.id for c in posts) == sorted(f"post-{i}" for i in range(n_valid))
    assert all(len(b) <= 7 for b in batches)
    assert {c.topic for c in posts} == set(kafka_settings.raw_topics)
    assert all(c.post.tickers == ("BA",) for c in posts)  # extracted from the text
    assert all(c.timestamp_ms > 0 for c in posts)
    assert sorted(m.reason for m in invalid) == sorted(MALFORMED)
    assert all(m.topic in kafka_settings.raw_topics and m.offset is not None for m in invalid)

    # Every malformed message is on the DLQ with its reason, position and original bytes.
    dead = read_topic(kafka_settings, kafka_settings.dlq_topic, len(MALFORMED))
    assert len(dead) == len(MALFORMED)
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers}
        assert record.value == MALFORMED[headers["reason"]]
        assert record.key == headers["reason"].encode()
        assert headers["detail"]
        assert headers["source_topic"] in kafka_settings.raw_topics
        assert int(headers["source_partition"]) >= 0 and int(headers["source_offset"]) >= 0

    # The batches' offsets were committed: a new member of the group gets nothing more.
    with _consumer(kafka_settings) as again:
        wait_for_assignment(again)
        assert again.poll_batch(100, 1000).empty


def test_group_resumes_from_committed_offsets(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=2)
    with PostProducer(kafka_settings) as producer:
        for i in range(12):
            producer.publish_post(make_post(i, tickers=("AAPL",) if i % 2 else ("MSFT",)))
    with _consumer(kafka_settings) as first:
        committed = poll_until(first, lambda bs: _count(bs) >= 5, max_records=5)
        first.commit(committed[-1] if len(committed) == 1 else _merge(committed))
        # Polled but never committed, as if the process died before its rows were durable.
        uncommitted = poll_until(first, lambda bs: _count(bs) >= 1, max_records=3)
    seen_first = {c.post.id for b in committed for c in b.posts}
    in_flight = {c.post.id for b in uncommitted for c in b.posts}
    assert seen_first and in_flight and not seen_first & in_flight

    with _consumer(kafka_settings) as second:
        rest = poll_until(second, lambda bs: _count(bs) >= 12 - len(seen_first))
        second.commit(_merge(rest))
    seen_second = [c.post.id for b in rest for c in b.posts]
    assert len(seen_second) == len(set(seen_second))
    assert set(seen_second) == {f"post-{i}" for i in range(12)} - seen_first
    assert in_flight <= set(seen_second)  # the uncommitted batch is delivered again


def _merge(batches):
    """One batch's worth of offsets covering several batches (latest offset per partition)."""
    from ingest.consumer import PolledBatch

    offsets = {}
    for batch in batches:
        offsets.update(batch.offsets)
    return PolledBatch(
        posts=[c for b in batches for c in b.posts],
        invalid=[m for b in batches for m in b.invalid],
        offsets=offsets,
    )


def test_posts_with_a_ticker_share_a_partition(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=3)
    with PostProducer(kafka_settings) as producer:
        for i in range(9):
            producer.publish_post(make_post(i, tickers=("NVDA",)))
            producer.publish_post(make_post(100 + i, tickers=("XOM", "NVDA")))
    with _consumer(kafka_settings) as consumer:
        batches = poll_until(consumer, lambda bs: _count(bs) >= 18)
    by_ticker: dict[str, set[int]] = {}
    for consumed in (c for b in batches for c in b.posts):
        by_ticker.setdefault(consumed.post.tickers[0], set()).add(consumed.partition)
    assert {t: len(p) for t, p in by_ticker.items()} == {"NVDA": 1, "XOM": 1}
    # Within the partition, posts keep their publishing order.
    nvda = [c.post.id for b in batches for c in b.posts if c.post.tickers == ("NVDA",)]
    assert nvda == [f"post-{i}" for i in range(9)]


def test_rewind_delivers_the_batch_again(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=1)
    with PostProducer(kafka_settings) as producer:
        for i in range(4):
            producer.publish_post(make_post(i))
    with _consumer(kafka_settings) as consumer:
        [batch] = poll_until(consumer, lambda bs: _count(bs) >= 4, max_records=4)
        consumer.rewind(batch)
        again = poll_until(consumer, lambda bs: _count(bs) >= 4, max_records=4)
    assert [c.offset for b in again for c in b.posts] == [c.offset for c in batch.posts]


def test_empty_topics_give_an_empty_batch(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings)
    with _consumer(kafka_settings) as consumer:
        batch = consumer.poll_batch(10, 300)
        assert batch.empty and not batch.posts and not batch.invalid and len(batch) == 0
        consumer.commit(batch)  # nothing to commit is not an error


def test_commit_after_leaving_the_group_raises_ingest_error(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=1)
    with PostProducer(kafka_settings) as producer:
        producer.publish_post(make_post(1))
    consumer = _consumer(kafka_settings)
    try:
        [batch] = poll_until(consumer, lambda bs: _count(bs) >= 1)
        # What a rebalance that evicted this member looks like to it (kafka-python internals).
        consumer._consumer._coordinator.maybe_leave_group()
        with pytest.raises(IngestError, match="CommitFailedError"):
            consumer.commit(batch)
    finally:
        consumer.close()
    consumer.close()  # idempotent
    with pytest.raises(IngestError, match="closed"):
        consumer.commit(batch)
    with pytest.raises(IngestError, match="closed"):
        consumer.poll_batch(1, 0)


def test_poll_batch_stops_waiting_once_ready(kafka_settings: KafkaSettings) -> None:
    """``ready`` ends the wait for a batch to fill: what is in hand comes back, nothing is lost."""
    ensure_topics(kafka_settings, partitions=1)
    with _consumer(kafka_settings) as consumer:
        wait_for_assignment(consumer)
        checks = []

        def ready() -> bool:
            checks.append(True)
            return len(checks) >= 3

        # Nothing to read and an hour to wait: the third check ends it.
        assert consumer.poll_batch(10, 3_600_000, ready=ready).empty
        assert len(checks) == 3
        with PostProducer(kafka_settings) as producer:
            for i in range(5):
                producer.publish_post(make_post(i))
            producer.flush()
        got: list[str] = []
        for _ in range(3000):  # ready() from the start: each call returns what one fetch brought
            got += [c.post.id for c in consumer.poll_batch(10, 3_600_000, ready=lambda: True).posts]
            if len(got) >= 5:
                break
        assert got == [f"post-{i}" for i in range(5)]

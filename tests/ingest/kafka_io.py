"""Small helpers for the broker tests: read a topic back, make posts."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from finpulse.schemas import Post
from finpulse.settings import KafkaSettings
from ingest.consumer import PolledBatch, PostConsumer

DEADLINE_S = 30.0


def make_post(i: int, *, source: str = "news", tickers: tuple[str, ...] = ()) -> Post:
    return Post(
        id=f"post-{i}",
        source=source,
        text=f"Post number {i} about Boeing",
        published_at=datetime(2024, 5, 1, tzinfo=timezone.utc) + timedelta(minutes=i),
        tickers=tickers,
    )


def read_topic(kafka: KafkaSettings, topic: str, count: int) -> list[Any]:
    """Read ``count`` records of ``topic`` from the beginning, without a group."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def poll_until(
    consumer: PostConsumer, done: Callable[[list[PolledBatch]], bool], *, max_records: int = 50
) -> list[PolledBatch]:
    """Poll batches until ``done(batches)`` or the deadline (so a bug fails instead of hanging)."""
    batches: list[PolledBatch] = []
    deadline = time.monotonic() + DEADLINE_S
    while not done(batches) and time.monotonic() < deadline:
        batch = consumer.poll_batch(max_records, 500)
        if not batch.empty:
            batches.append(batch)
    return batches


def wait_for_assignment(consumer: PostConsumer) -> None:
    """Poll (empty) batches until the consumer owns partitions; fail after the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while not consumer.assignment():
        batch = consumer.poll_batch(1, 200)
        assert batch.empty, "wait_for_assignment must only be used on an empty topic position"
        assert time.monotonic() < deadline, "consumer never got partitions"

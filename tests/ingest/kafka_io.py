"""Small helpers for the broker tests: read a topic back, make posts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
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


def produce_to_partitions(kafka: KafkaSettings, partitions: tuple[int, ...], per_partition: int) -> set[str]:
    """``per_partition`` posts on each of the news topic's ``partitions``, sent together and
    flushed once; returns their ids (``post-<partition * 1000 + i>``)."""
    from kafka import KafkaProducer

    ids = set()
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    try:
        for partition in partitions:
            for i in range(per_partition):
                post = make_post(partition * 1000 + i)
                producer.send(kafka.news_topic, post.model_dump_json().encode(), partition=partition)
                ids.add(post.id)
        producer.flush()
    finally:
        producer.close()
    return ids


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


_ESTABLISHED = "01"


def connections_to(port: int) -> int:
    """This process's established TCP connections to ``port`` on any address."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed between listing and reading
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == _ESTABLISHED and fields[9] in inodes:
                count += 1
    return count

"""A paused partition comes back: kafka-python 3's parked records, restored (``ingest.client``).

kafka-python 3 parks the records of a partition paused while they were only partly
returned. Unfixed, it never restores them once records of another partition have been
returned meanwhile, and never fetches that partition again. The scorer pauses its
partitions while it waits out an outage, so a rebalance during that wait stalled one
partition for good (the SIGKILL fault test caught it, in 2 of 3 CI runs).
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

import ingest.client
from finpulse.settings import KafkaSettings
from ingest.consumer import PostConsumer
from ingest.topics import ensure_topics
from tests.ingest.kafka_io import DEADLINE_S, produce_to_partitions

PER_PARTITION = 40


def test_the_fix_is_in_place_once_ingest_is_imported() -> None:
    assert ingest.client.RESTORES_PARKED_FETCHES
    assert ingest.client.restore_parked_fetches()  # idempotent: wrapped once


def test_a_partition_paused_mid_fetch_is_read_to_the_end_after_resume(kafka_settings: KafkaSettings) -> None:
    """Pause a partly returned partition, read the other one meanwhile, resume: nothing stalls."""
    ensure_topics(kafka_settings, partitions=2)
    produce_to_partitions(kafka_settings, (0, 1), PER_PARTITION)
    consumer = KafkaConsumer(bootstrap_servers=kafka_settings.bootstrap_servers,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(kafka_settings.news_topic, p) for p in (0, 1)]
        consumer.assign(partitions)
        seen = dict.fromkeys(partitions, 0)

        def poll(**kwargs: int) -> dict[TopicPartition, list]:
            polled = consumer.poll(**kwargs)
            for tp, records in polled.items():
                seen[tp] += len(records)
            return polled

        deadline = time.monotonic() + DEADLINE_S
        first: TopicPartition | None = None
        while first is None and time.monotonic() < deadline:
            first = next(iter(poll(timeout_ms=500, max_records=5)), None)
        assert first is not None and seen[first] == 5  # the rest of its fetch is in hand
        (other,) = set(partitions) - {first}
        consumer.pause(first)
        while seen[other] < PER_PARTITION and time.monotonic() < deadline:
            poll(timeout_ms=200)
        assert seen == {first: 5, other: PER_PARTITION}  # paused: nothing more of it
        consumer.resume(first)
        while seen[first] < PER_PARTITION and time.monotonic() < deadline:
            poll(timeout_ms=200)
        assert seen == {first: PER_PARTITION, other: PER_PARTITION}
    finally:
        consumer.close()


def test_keep_alive_across_a_rebalance_then_every_post_arrives(kafka_settings: KafkaSettings) -> None:
    """The scorer's path: a member owns a partly read partition, waits out an outage with
    ``keep_alive`` while the other member leaves; afterwards it reads both partitions to the end."""
    ensure_topics(kafka_settings, partitions=2)
    settle_by = time.monotonic() + 2 * DEADLINE_S
    with PostConsumer(kafka_settings, max_text_chars=200) as first:
        with PostConsumer(kafka_settings, max_text_chars=200) as second:
            # Both join while the topics are empty, until each owns one news partition (and
            # one social partition); both keep polling so every rebalance completes.
            while not (len(first.assignment()) == len(second.assignment()) == 2):
                assert time.monotonic() < settle_by, "the group never settled with two members"
                assert first.poll_batch(1, 100).empty and second.poll_batch(1, 100).empty
            ids = produce_to_partitions(kafka_settings, (0, 1), PER_PARTITION)
            # The first reads 5 posts of its own partition; the rest of that fetch stays in
            # hand. (The second reads nothing and commits nothing.)
            deadline = time.monotonic() + DEADLINE_S
            seen: set[str] = set()
            while not seen:
                assert time.monotonic() < deadline, "the first member read nothing"
                seen.update(c.post.id for c in first.poll_batch(5, 200).posts)
            assert len(seen) == 5
        # The second member has left: the first rejoins while it waits with its partitions
        # paused, and is handed the other partition.
        first.keep_alive(8.0)
        assert len(first.assignment()) == 4
        while seen != ids and time.monotonic() < deadline + DEADLINE_S:
            seen.update(c.post.id for c in first.poll_batch(50, 200).posts)
    assert seen == ids, f"{len(ids - seen)} post(s) never delivered after the rebalance"

"""``PostConsumer.stalled``: partitions with messages waiting that do not move are named.

The stall is real, not simulated: kafka-python 3.0.12's own fetcher, with finpulse's fix
(``ingest.client``) taken away for the test, stops fetching a partition that was paused
while its records were partly returned. The rest of the stream still flows meanwhile.
"""

from __future__ import annotations

import logging
import time

import pytest
from kafka.consumer import fetcher

from finpulse.settings import KafkaSettings
from ingest.consumer import PostConsumer
from ingest.topics import ensure_topics
from tests.ingest.kafka_io import DEADLINE_S, produce_to_partitions

PER_PARTITION = 40


def test_a_partition_the_client_stops_fetching_is_named_while_the_rest_flows(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fixed = fetcher.Fetcher.fetched_records
    monkeypatch.setattr(fetcher.Fetcher, "fetched_records", fixed.__wrapped__)  # kafka-python as shipped
    ensure_topics(kafka_settings, partitions=2)
    produce_to_partitions(kafka_settings, (0, 1), PER_PARTITION)
    deadline = time.monotonic() + DEADLINE_S
    with PostConsumer(kafka_settings, max_text_chars=200) as consumer:
        # Five posts of one partition; the rest of its fetch stays in the client's hands.
        got: list = []
        while not got:
            assert time.monotonic() < deadline
            got = consumer.poll_batch(5, 200).posts
        stuck = {(c.topic, c.partition) for c in got}
        assert len(stuck) == 1 and len(got) == 5
        ((topic, number),) = stuck
        tp = next(p for p in consumer.assignment() if (p.topic, p.partition) == (topic, number))
        # The fault, at an exact point: paused with records in hand, the other partition read
        # meanwhile, then resumed.
        consumer._consumer.pause(tp)
        others = []
        while len(others) < PER_PARTITION:
            assert time.monotonic() < deadline, "the other partition did not flow"
            others += consumer.poll_batch(50, 200).posts
        consumer._consumer.resume(tp)
        assert {c.partition for c in others} == {1 - number}

        assert consumer.stalled(1.0, now=100.0) == set()  # first sight: clocks start
        for _ in range(5):
            assert consumer.poll_batch(50, 200).posts == []  # stuck: nothing more comes
        with caplog.at_level(logging.WARNING, logger="ingest.consumer"):
            assert consumer.stalled(1.0, now=100.5) == set()  # not long enough yet
            assert consumer.stalled(1.0, now=101.0) == {tp}
            assert consumer.stalled(1.0, now=102.0) == {tp}
        warnings = [r.getMessage() for r in caplog.records if "stalled partition" in r.getMessage()]
        expected = (f"stalled partition {topic}[{number}]: at offset 5 for 1 s with "
                    f"35 message(s) waiting (end offset {PER_PARTITION})")
        assert warnings == [expected]  # logged once

        # With the fix back, the same consumer picks the partition up again.
        monkeypatch.setattr(fetcher.Fetcher, "fetched_records", fixed)
        rest: list = []
        while len(rest) < PER_PARTITION - 5:
            assert time.monotonic() < deadline + DEADLINE_S, "the stalled partition never resumed"
            rest += consumer.poll_batch(50, 200).posts
        assert [c.offset for c in rest] == list(range(5, PER_PARTITION))
        assert consumer.stalled(1.0, now=200.0) == set()


def test_a_partition_left_paused_counts_but_keep_alive_restarts_the_clocks(kafka_settings: KafkaSettings) -> None:
    """Empty partitions never stall; one left paused with messages waiting does (a client
    that stops fetching it looks the same), except across ``keep_alive``, which pauses on
    purpose."""
    ensure_topics(kafka_settings, partitions=2)
    with PostConsumer(kafka_settings, max_text_chars=200) as consumer:
        deadline = time.monotonic() + DEADLINE_S
        while not consumer.assignment():
            assert time.monotonic() < deadline
            assert consumer.poll_batch(1, 200).empty
        (tp,) = [p for p in consumer.assignment() if (p.topic, p.partition) == (kafka_settings.news_topic, 1)]
        assert consumer.stalled(1.0, now=0.0) == set()
        assert consumer.stalled(1.0, now=10.0) == set()  # empty partitions: nothing waits
        consumer._consumer.pause(tp)  # never handed out from here on
        produce_to_partitions(kafka_settings, (1,), PER_PARTITION)
        assert consumer.poll_batch(50, 500).empty  # a fetch already in flight is set aside
        # Its clock runs from the last check that found nothing waiting (t = 10).
        assert consumer.stalled(1.0, now=10.5) == set()
        assert consumer.stalled(1.0, now=11.0) == {tp}
        consumer.keep_alive(0.3)  # pauses everything, resumes everything
        consumer._consumer.pause(tp)  # left paused again, before any fetch
        assert consumer.stalled(1.0, now=30.0) == set()  # the wait restarted every clock
        assert consumer.stalled(1.0, now=31.0) == {tp}

"""Every client finpulse opens on the broker gives its connections back when it is closed.

The test suite ignores "unclosed socket" warnings raised while garbage is collected (see
pyproject.toml: kafka-python's network thread can drop one on its own); this test is what
keeps finpulse's own clients honest instead: it counts this process's TCP connections to the
broker, straight from /proc, before and after.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest

from finpulse.settings import KafkaSettings
from ingest.consumer import PostConsumer
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from tests.ingest.kafka_io import connections_to, make_post, poll_until

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")

def test_producer_consumer_and_admin_close_their_connections(kafka_settings: KafkaSettings) -> None:
    port = int(kafka_settings.bootstrap_servers.rsplit(":", 1)[1])
    # Earlier tests in this process may still hold a connection that is being torn down (a
    # client's network thread, an unreferenced client awaiting collection): give them time,
    # then count only what this test's clients add on top of what is left.
    deadline = time.monotonic() + 30
    while connections_to(port) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.5)
    base = connections_to(port)

    ensure_topics(kafka_settings, partitions=1)
    assert connections_to(port) <= base, "ensure_topics left its admin client connected"

    producer = PostProducer(kafka_settings)
    producer.publish_post(make_post(1))
    producer.publish_raw(kafka_settings.news_topic, b"not json")
    producer.flush()
    assert connections_to(port) > 0  # the count sees live clients
    producer.close()
    assert connections_to(port) <= base, "PostProducer.close left a connection open"

    consumer = PostConsumer(kafka_settings, max_text_chars=200)
    batches = poll_until(consumer, lambda bs: sum(len(b) for b in bs) >= 2)
    assert sum(len(b) for b in batches) == 2
    for batch in batches:
        consumer.commit(batch)  # the bad message went to the DLQ through the consumer's producer
    consumer.close()
    assert connections_to(port) <= base, "PostConsumer.close left a connection open"

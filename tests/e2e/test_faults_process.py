"""Fault injection on scorer processes: SIGKILL at each step of a batch, in a group of two, and SIGTERM.

The crashes land at exact points (``tests/e2e/scorer_harness.py`` replaces the scorer's
no-op checkpoint hook), never on a timer. Scorers run two at a time in one consumer
group, so every round also kills a group member while the other holds partitions:

1. one dies right after decoding its first batch, the other right after storing it;
2. one dies right after publishing its first batch, the other right before committing it;
3. one is sent SIGTERM in the middle of its third batch (it finishes the batch, commits
   and exits 0) while the other goes on; then the survivor stores the rest.

It asserts: every post stored exactly once, nothing on the DLQ, at most one batch per
crash published twice to ``finpulse.scored``, and every SIGTERM exits 0.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from finpulse.storage import Storage
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from tests.e2e.faults import (
    make_posts,
    report,
    scorer_env,
    start_scorer,
    stop,
    stored_ids,
    wait_for,
)
from tests.ingest.kafka_io import read_topic

pytestmark = [pytest.mark.timeout(400), pytest.mark.postgres]

# Enough tickers that both members of a group own partitions with posts on them.
TICKERS = ("AAPL", "MSFT", "BA", "JPM", "XOM", "GE", "KO", "PFE", "T")
ROUNDS = (("after_decode", "after_insert"), ("after_publish", "before_commit"))


def test_sigkill_at_each_step_in_a_group_then_sigterm_mid_batch(kafka_settings, postgres_url, tmp_path, request):
    ensure_topics(kafka_settings)
    storage = Storage(postgres_url)
    request.addfinalizer(storage.dispose)
    storage.migrate()
    posts = [post for ticker in TICKERS for post in make_posts(40, prefix=ticker.lower(), ticker=ticker)]
    with PostProducer(kafka_settings) as producer:
        for post in posts:
            producer.publish_post(post)
        producer.flush()
    env = scorer_env(kafka_settings, postgres_url)
    log_path = tmp_path / "scorer.log"
    procs = []
    with open(log_path, "wb") as log:
        try:
            for points in ROUNDS:
                pair = [start_scorer(env, log, crash_at=point) for point in points]
                procs += pair
                for point, proc in zip(points, pair):
                    assert proc.wait(180) == -signal.SIGKILL, f"no crash at {point}: {log_path.read_text()[-2000:]}"
            killed_at = time.monotonic()
            terminated = start_scorer(env, log, crash_at="term:after_insert", nth=3)
            survivor = start_scorer(env, log)
            procs += [terminated, survivor]
            assert terminated.wait(180) == 0, "SIGTERM mid-batch: finish the batch, commit, exit 0"
            wait_for(lambda: storage.count_posts() >= len(posts), 180, "the survivor to store every post")
            recover_s = time.monotonic() - killed_at
            survivor.send_signal(signal.SIGTERM)
            assert survivor.wait(60) == 0
        finally:
            for proc in procs:
                stop(proc)
    text = log_path.read_text()
    for point in (*ROUNDS[0], *ROUNDS[1]):
        assert f"SIGKILL at {point} #1" in text
    assert "SIGTERM at after_insert #3" in text
    stored = stored_ids(storage)
    assert stored == Counter(p.id for p in posts), text[-3000:]
    assert storage.count_scores() == len(posts)
    scored = read_topic(kafka_settings, kafka_settings.scored_topic, 2 * len(posts))
    # at-least-once on finpulse.scored: a crash after the insert re-publishes its batch (16 at most)
    assert len(posts) <= len(scored) <= len(posts) + 3 * 16
    assert read_topic(kafka_settings, kafka_settings.dlq_topic, 1) == []
    report("SIGKILL after decode/insert/publish/before commit, 2 per group; SIGTERM mid-batch",
           len(posts), stored, 0, recover_s)

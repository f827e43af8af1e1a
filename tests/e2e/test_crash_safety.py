"""Kill the scorer process with SIGKILL mid-stream, restart it: nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest

from finpulse.schemas import Post
from finpulse.storage import Storage
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from tests.e2e.posts import CALM, T0, drain

pytestmark = [pytest.mark.timeout(300), pytest.mark.postgres]

N_POSTS = 600


def scorer_process(env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "finpulse", "scorer", "--reload-interval", "3600"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_sigkill_mid_stream_loses_and_duplicates_nothing(kafka_settings, postgres_url, tmp_path, request):
    ensure_topics(kafka_settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINPULSE_") or k == "FINPULSE_MODEL__PATH"}
    env.update({
        "FINPULSE_DATABASE_URL": postgres_url,
        "FINPULSE_METRICS__ENABLED": "false",
        "FINPULSE_SCORER__MAX_BATCH_SIZE": "16",
        "FINPULSE_SCORER__MAX_WAIT_MS": "50",
        **{f"FINPULSE_KAFKA__{k.upper()}": str(v)
           for k, v in kafka_settings.model_dump(exclude_none=True).items()},
    })
    posts = [
        Post(id=f"p-{i}", source="news", text=CALM[i % len(CALM)].format(name=f"Company {i}"),
             published_at=T0 + timedelta(seconds=i), tickers=("AAPL",))
        for i in range(N_POSTS)
    ]

    def publish() -> None:
        with PostProducer(kafka_settings) as producer:
            for post in posts:
                producer.publish_post(post)
                time.sleep(0.01)  # a steady stream, so the kill lands mid-way
            producer.flush()

    storage = Storage(postgres_url)
    request.addfinalizer(storage.dispose)  # also when an assertion fails
    storage.migrate()
    log_path = tmp_path / "scorer.log"
    procs: list[subprocess.Popen] = []
    with open(log_path, "wb") as log:
        first = scorer_process(env, log)
        procs.append(first)
        publisher = threading.Thread(target=publish)
        publisher.start()
        try:
            wait_for(lambda: storage.count_posts() >= 50, 120, "the first scorer to store 50 posts")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            killed_at = storage.count_posts()
            assert 0 < killed_at < N_POSTS, "the kill must land in the middle of the stream"

            second = scorer_process(env, log)
            procs.append(second)
            publisher.join()
            wait_for(lambda: storage.count_posts() >= N_POSTS, 180, "the restarted scorer to catch up")
            time.sleep(1.0)  # anything redelivered late would show up as a failed insert or extra row
            second.send_signal(signal.SIGTERM)
            assert second.wait(60) == 0, "SIGTERM ends the scorer cleanly"
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            publisher.join()
    stored = storage.scores(limit=10 * N_POSTS)
    assert sorted(p.id for p in stored) == sorted(p.id for p in posts), log_path.read_text()[-2000:]
    assert storage.count_posts() == N_POSTS
    assert storage.count_scores() == N_POSTS
    # The restart resumed from the committed offsets: only the batch in flight at the
    # kill was scored twice (and published twice to finpulse.scored, which is at-least-once).
    republished = len(drain(kafka_settings, kafka_settings.scored_topic, 2 * N_POSTS, timeout_s=10)) - N_POSTS
    assert 0 <= republished <= 64

"""A live run equals a batch run: the real broker, scorer and monitor running together, with
monitor passes interleaved with the scorer's batches, fire exactly the alerts that one
batch pass over the same stored data fires, on one partition and on six."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from finpulse.metrics import Metrics
from finpulse.schemas import Post
from finpulse.services.monitor import MonitorService
from finpulse.services.scorer import ScorerService, load_engine
from finpulse.settings import MonitorSettings, Settings
from finpulse.storage import Storage, utcnow
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from models.inference import SentimentEngine
from monitor.aggregation import aggregate
from monitor.health import evaluate_model_health
from monitor.judging import evaluate
from monitor.risk_events import evaluate_risk_events
from monitor.rules import RuleSet
from monitor.watermark import partition_watermark
from tests.e2e.posts import T0, calm_then_burst

pytestmark = pytest.mark.timeout(300)

IDLE_S = 3.0


@pytest.fixture(scope="module")
def engine() -> SentimentEngine:
    return load_engine(Settings.load(), Settings.load().model.path)


def stream() -> list[Post]:
    """20 calm hours of three companies, and a burst of bad Boeing news in hour 14."""
    baseline, burst = calm_then_burst(hours=20)
    shift = T0 + timedelta(hours=14, minutes=5) - min(p.published_at for p in burst)
    moved = [p.model_copy(update={"published_at": p.published_at + shift}) for p in burst]
    return sorted(baseline + moved, key=lambda p: p.published_at)


def alert_set(storage: Storage) -> set[tuple]:
    return {(a.id, a.state, a.fired_at, a.resolved_at, a.post_ids) for a in storage.alerts()}


@pytest.mark.parametrize(
    ("partitions", "db"),
    [(1, "sqlite_url"), pytest.param(6, "postgres_url", marks=pytest.mark.postgres)],
)
def test_live_alerts_equal_a_batch_pass(request, partitions, db, kafka_settings, engine, tmp_path):
    url = request.getfixturevalue(db)
    settings = Settings.load(
        database_url=url,
        kafka=kafka_settings.model_dump(),
        scorer={"max_batch_size": 16, "max_wait_ms": 100},
        metrics={"enabled": False},
    )
    ensure_topics(settings.kafka, partitions=partitions)
    posts = stream()
    with PostProducer(settings.kafka) as producer:
        for post in posts:
            producer.publish_post(post)
        producer.flush()

    storage = Storage(url)
    storage.migrate()
    rules = RuleSet.load()
    scorer = ScorerService(settings, engine=engine, storage=storage,
                           metrics=Metrics(CollectorRegistry()))
    done = threading.Event()
    failures: list[BaseException] = []

    def score() -> None:
        try:
            scorer.run(threading.Event(), until_consumed=len(posts))
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which fails the test
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=score, daemon=True)
    monitor = MonitorService(storage, rules, settings=MonitorSettings(idle_partition_s=IDLE_S))
    passes = 0
    try:
        thread.start()
        while not done.is_set():  # passes interleaved with the scorer's batches
            monitor.run_once()
            passes += 1
        thread.join()
    finally:
        scorer.close()
    assert not failures, failures
    assert storage.count_scores() == len(posts)
    assert passes > 2
    # The stream has ended: once every partition has been idle, the last windows close.
    deadline = time.monotonic() + 60
    while True:
        with storage.begin() as conn:
            mark = partition_watermark(conn, utcnow(), timedelta(seconds=IDLE_S))
        if mark is not None and mark >= max(p.published_at for p in posts):
            break
        assert time.monotonic() < deadline, "partitions never went idle"
        time.sleep(0.2)
    while monitor.run_once().waiting:
        pass
    monitor.run_once()
    live = alert_set(storage)

    batch = Storage(f"sqlite:///{tmp_path / 'batch.db'}")
    batch.migrate()
    try:
        batch.save_scored(storage.scores(limit=len(posts) + 1))
        aggregate(batch, windows=("1m", "5m", "1h"))
        evaluate(batch, rules)
        evaluate_risk_events(batch, rules)
        evaluate_model_health(batch, rules)
        expected = alert_set(batch)
    finally:
        batch.dispose()
        storage.dispose()
    assert {(a[0].split(":")[0], a[0].split(":")[1]) for a in live} >= {
        ("sentiment_drop", "BA"), ("negative_volume_spike", "BA")
    }
    assert live == expected

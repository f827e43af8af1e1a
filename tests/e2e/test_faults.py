"""Fault injection on real services, in process: poison inputs, a database outage, a broker restart.

Each case asserts: every valid post stored exactly once, every bad one on the DLQ with its
reason, and the scorer still running. The process-level cases (SIGKILL at each step of a
batch, two scorers with one killed, SIGTERM) are in test_faults_process.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry

from finpulse.metrics import Metrics
from finpulse.services.scorer import (
    ModelReloader,
    ScorerService,
    load_engine,
    register_model,
)
from finpulse.settings import KafkaSettings, Settings
from finpulse.storage import Storage
from finpulse.storage.registry import ModelRegistry
from ingest.broker import EmbeddedBroker
from ingest.producer import PostProducer, post_key
from ingest.topics import ensure_topics
from models import DEFAULT_MODEL_DIR
from models.inference import SentimentEngine
from tests.e2e.faults import (
    PrivatePostgres,
    dlq_reasons,
    make_posts,
    report,
    stored_ids,
    wait_for,
)
from tests.ingest.kafka_io import read_topic

pytestmark = [pytest.mark.timeout(300), pytest.mark.postgres]


@pytest.fixture(scope="module")
def engine() -> SentimentEngine:
    return load_engine(Settings.load(), Settings.load().model.path)


class ExplodingEngine:
    """The real engine, except that a text containing ``EXPLODE`` makes it raise (a model bug)."""

    def __init__(self, engine: SentimentEngine) -> None:
        self._engine = engine
        self.version, self.manifest = engine.version, engine.manifest

    def predict(self, texts, *, sources=None):
        if any("EXPLODE" in text for text in texts):
            raise IndexError("index out of range in self")
        return self._engine.predict(texts, sources=sources)


class Running:
    """A ScorerService running in a thread; ``error`` holds what ended it, if anything."""

    def __init__(self, service: ScorerService) -> None:
        self.service = service
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.service.run(self.stop)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def alive(self) -> bool:
        return self.thread.is_alive() and self.error is None

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self.service.close()


def settings_for(kafka: KafkaSettings, url: str) -> Settings:
    return Settings.load(
        database_url=url, kafka=kafka.model_dump(), metrics={"enabled": False},
        scorer={"max_batch_size": 16, "max_wait_ms": 50, "retry_base_s": 0.2, "retry_cap_s": 1.0},
    )


def committed_total(kafka: KafkaSettings) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=kafka.group_id,
                             enable_auto_commit=False)
    try:
        total = 0
        for topic in kafka.raw_topics:
            for p in consumer.partitions_for_topic(topic) or ():
                total += consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        consumer.close()


def raw(post_id: str, text: str = "Apple declares regular quarterly dividend", **fields) -> bytes:
    base = {"id": post_id, "source": "news", "text": text, "published_at": "2026-11-02T09:00:00Z",
            "tickers": ["AAPL"]}
    base.update(fields)
    return json.dumps(base).encode()


POISON: list[tuple[str, str, bytes]] = [  # (input, DLQ reason, message)
    ("NUL (\\u0000) in text", "bad_characters", raw("bad-nul", "Apple\u0000 dividend")),
    ("lone surrogate (\\ud800) in text", "bad_characters", (b'{"id": "bad-sur", "source": "news", "text": "x \\ud800", '
                        b'"published_at": "2026-11-02T09:00:00Z"}')),
    ("JSON nested 100,000 deep", "too_deep", b'{"id": "bad-deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("published_at 0001-01-01T00:00:00+14:00", "bad_timestamp", raw("bad-ts-low", published_at="0001-01-01T00:00:00+14:00")),
    ("published_at 9999-12-31T23:59:59-14:00", "bad_timestamp", raw("bad-ts-high", published_at="9999-12-31T23:59:59-14:00")),
    ("published_at 2099 (future)", "future_timestamp", raw("bad-future", published_at="2099-01-01T00:00:00Z")),
    ("5 MB message", "oversized", raw("bad-big", "x" * 5_000_000)),
    ("id p-0 re-published with other text and tickers", "conflicting_id", raw("p-0", "Microsoft cuts jobs", tickers=["MSFT"])),
    ("input that makes the model raise", "internal", raw("bad-explode", "Apple EXPLODE dividend")),
    ("not JSON", "not_json", b"{this is not json"),
]


def test_poison_inputs_go_to_the_dlq_and_valid_posts_behind_them_are_stored_once(
    kafka_settings, postgres_url, engine
):
    settings = settings_for(kafka_settings, postgres_url)
    ensure_topics(settings.kafka, partitions=1)  # one partition: poison strictly interleaved
    storage = Storage(postgres_url)
    storage.migrate()
    valid = make_posts(10 * len(POISON) + 1)
    metrics = Metrics(CollectorRegistry())
    running = Running(ScorerService(settings, engine=ExplodingEngine(engine), storage=storage, metrics=metrics))
    try:
        with PostProducer(settings.kafka, max_request_size=8 * 1024 * 1024) as producer:
            # Everything on one partition of one topic, so the order of consumption is known:
            # p-0 is stored before its conflicting re-publish arrives.
            producer.publish_raw(settings.kafka.news_topic, valid[0].model_dump_json().encode(),
                                 key=post_key(valid[0]))
            for i, (_, _, value) in enumerate(POISON):
                producer.publish_raw(settings.kafka.news_topic, value, key=post_key(valid[0]))
                for post in valid[10 * i + 1 : 10 * i + 11]:
                    producer.publish_raw(settings.kafka.news_topic, post.model_dump_json().encode(),
                                         key=post_key(valid[0]))
            producer.flush()
        sent_at = time.monotonic()
        wait_for(lambda: running.service.stats.consumed >= len(valid) + len(POISON) or not running.alive(),
                 120, "the scorer to consume the stream")
        drained_s = time.monotonic() - sent_at
        assert running.alive(), running.error
        stored = stored_ids(storage)
        assert stored == Counter(p.id for p in valid)
        reasons = dlq_reasons(settings.kafka, len(POISON))
        assert reasons == Counter(reason for _, reason, _ in POISON)
        for i, (label, reason, _) in enumerate(POISON):
            behind = Counter({p.id: stored[p.id] for p in valid[10 * i + 1 : 10 * i + 11]})
            report(f"{label} -> {reason}, then 10 valid posts", 11, behind, 1, None)
        report("poison inputs (all above) + valid posts", len(valid) + len(POISON), stored,
               sum(reasons.values()), drained_s)
        first = storage.scores(ticker="MSFT")
        assert first == [], "the conflicting re-publish of p-0 left nothing of itself"
        for reason in ("internal",):
            assert metrics.registry.get_sample_value(
                "finpulse_scorer_faults_total", {"kind": reason}) == 1
        assert metrics.registry.get_sample_value(
            "finpulse_ingest_messages_invalid_total", {"reason": "oversized"}) == 1
        big = [r for r in read_topic(settings.kafka, settings.kafka.dlq_topic, len(POISON))
               if dict(r.headers)["reason"] == b"oversized"][0]
        assert dict(big.headers)["original_bytes"] == str(len(POISON[6][2])).encode()
    finally:
        running.close()
        storage.dispose()


def test_a_database_outage_is_waited_out_without_loss(kafka_settings, engine):
    pg = PrivatePostgres()
    storage: Storage | None = None
    running: Running | None = None
    try:
        pg.start()
        settings = settings_for(kafka_settings, pg.url)
        ensure_topics(settings.kafka)
        storage = Storage(pg.url)
        storage.migrate()
        registry = ModelRegistry(storage)
        register_model(registry, engine, DEFAULT_MODEL_DIR)
        metrics = Metrics(CollectorRegistry())
        service = ScorerService(settings, engine=engine, storage=storage, metrics=metrics,
                                reloader=ModelReloader(settings, registry, interval_s=0.2))
        running = Running(service)
        before, during = make_posts(40, "before"), make_posts(40, "during")
        with PostProducer(settings.kafka) as producer:
            for post in before:
                producer.publish_post(post)
            producer.flush()
            wait_for(lambda: storage.count_posts() == 40, 120, "the posts before the outage")
            pg.stop()
            # The first thing to meet the outage is the model-reload check: it must not escape.
            wait_for(lambda: (metrics.registry.get_sample_value(
                "finpulse_scorer_retries_total", {"operation": "reload"}) or 0) >= 2, 60, "reload retries")
            for post in during:
                producer.publish_post(post)
            producer.flush()
            time.sleep(3)  # a few seconds of outage (30 s in production terms: same code path)
            assert running.alive(), running.error
            pg.start()
            recover_s = wait_for(lambda: storage.count_posts() == 80, 120, "the posts sent during the outage")
        assert running.alive(), running.error
        wait_for(lambda: committed_total(settings.kafka) == 80, 30, "offsets committed")
        assert stored_ids(storage) == Counter(p.id for p in before + during)
        assert len(read_topic(settings.kafka, settings.kafka.scored_topic, 80)) == 80
        report("database outage (private PostgreSQL stopped, reload check inside it)", 80,
               stored_ids(storage), 0, recover_s)
    finally:
        if running is not None:
            running.close()
        if storage is not None:
            storage.dispose()
        pg.destroy()


def test_a_broker_restart_resumes_publishing_and_commits(tmp_path, engine):
    broker = EmbeddedBroker().start()
    running: Running | None = None
    storage = Storage(f"sqlite:///{tmp_path / 'finpulse.db'}")
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, group_id="restart",
                              session_timeout_ms=6000, heartbeat_interval_ms=1000)
        settings = settings_for(kafka, storage.url)
        ensure_topics(kafka)
        storage.migrate()
        running = Running(ScorerService(settings, engine=engine, storage=storage,
                                        metrics=Metrics(CollectorRegistry())))
        before, after = make_posts(20, "before"), make_posts(20, "after")
        with PostProducer(kafka) as producer:
            for post in before:
                producer.publish_post(post)
            producer.flush()
        wait_for(lambda: storage.count_posts() == 20, 120, "the posts before the restart")
        broker.stop()  # in-memory: the restarted broker has empty topics and no producer ids
        broker.start()
        restarted_at = time.monotonic()
        ensure_topics(kafka)
        with PostProducer(kafka) as producer:
            for post in after:
                producer.publish_post(post)
            producer.flush()
        wait_for(lambda: storage.count_posts() == 40, 120, "the posts after the restart")
        wait_for(lambda: committed_total(kafka) == 20, 60, "offsets committed after the restart")
        assert len(read_topic(kafka, kafka.scored_topic, 20)) == 20, "scored posts published again"
        assert running.alive(), running.error
        assert stored_ids(storage) == Counter(p.id for p in before + after)
        report("broker kill + restart (then 20 new posts)", 40, stored_ids(storage), 0,
               time.monotonic() - restarted_at)
    finally:
        if running is not None:
            running.close()
        storage.dispose()
        broker.stop()


def test_consume_time_decides_future_posts(kafka_settings, sqlite_url, engine):
    """A post a little ahead of the consume time is fine; beyond the tolerance it is refused."""
    settings = settings_for(kafka_settings, sqlite_url)
    ensure_topics(settings.kafka, partitions=1)
    storage = Storage(sqlite_url)
    storage.migrate()
    now = datetime.now(timezone.utc)
    running = Running(ScorerService(settings, engine=engine, storage=storage, metrics=Metrics(CollectorRegistry())))
    try:
        with PostProducer(settings.kafka) as producer:
            producer.publish_raw(settings.kafka.news_topic, raw("soon", published_at=(now + timedelta(minutes=1)).isoformat()))
            producer.publish_raw(settings.kafka.news_topic, raw("later", published_at=(now + timedelta(hours=1)).isoformat()))
            producer.flush()
        wait_for(lambda: running.service.stats.consumed >= 2, 60, "both posts consumed")
        assert stored_ids(storage) == Counter(["soon"])
        assert dlq_reasons(settings.kafka, 1) == Counter(["future_timestamp"])
    finally:
        running.close()
        storage.dispose()


def test_a_partition_that_stops_moving_is_reported_while_the_rest_flows(kafka_settings, postgres_url, engine):
    """A partition left paused behind the scorer's back (as a client bug would leave it) is
    counted in ``finpulse_scorer_stalled_partitions``; the other partition goes on."""
    from kafka import KafkaProducer

    settings = Settings.load(
        database_url=postgres_url, kafka=kafka_settings.model_dump(), metrics={"enabled": False},
        scorer={"max_batch_size": 16, "max_wait_ms": 50, "stall_after_s": 1.0},
    )
    ensure_topics(settings.kafka, partitions=2)
    storage = Storage(postgres_url)
    storage.migrate()
    metrics = Metrics(CollectorRegistry())
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers)
    running = Running(ScorerService(settings, engine=engine, storage=storage, metrics=metrics))

    def send(prefix: str, partition: int) -> None:
        for i in range(5):  # one batch per post: Tansu's end offsets count batches right
            producer.send(kafka_settings.news_topic, raw(f"{prefix}-{partition}-{i}"), partition=partition)
            producer.flush()

    def stalled() -> float | None:
        return metrics.registry.get_sample_value("finpulse_scorer_stalled_partitions")

    try:
        send("a", 0)
        send("a", 1)
        wait_for(lambda: storage.count_posts() == 10, 120, "the first posts")
        (tp,) = [p for p in running.service.consumer.assignment()
                 if p.topic == kafka_settings.news_topic and p.partition == 0]
        running.service.consumer._consumer.pause(tp)  # the fault, behind the scorer's back
        send("b", 0)
        send("b", 1)
        wait_for(lambda: storage.count_posts() == 15, 60, "the other partition's posts")
        wait_for(lambda: stalled() == 1, 30, "the stalled partition to be counted")
        assert storage.count_posts() == 15 and running.alive(), running.error
        running.service.consumer._consumer.resume(tp)
        wait_for(lambda: storage.count_posts() == 20, 60, "the stalled partition's posts")
        wait_for(lambda: stalled() == 0, 30, "the count to fall back to 0")
        assert Counter(p.id for p in storage.scores(limit=100)) == Counter(
            f"{prefix}-{partition}-{i}" for prefix in "ab" for partition in (0, 1) for i in range(5))
    finally:
        running.close()
        producer.close()
        storage.dispose()

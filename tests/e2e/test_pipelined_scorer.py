"""The pipelined scorer (the model one batch ahead) stores, publishes and commits what the
one-batch-at-a-time scorer does, and a batch it abandons takes nothing after it along.

Real broker, real PostgreSQL, the real engine. Faults are real too: a poison stream (not
JSON, conflicting ids, an input that crashes the model, a row PostgreSQL refuses) and a
transient database fault: another session holds a lock on ``scores`` while the scorer's
connections have a ``lock_timeout``, so a store fails with PostgreSQL's own
``LockNotAvailable`` (transient) until the lock goes.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from finpulse.metrics import Metrics
from finpulse.schemas import Post
from finpulse.services.scorer import ScorerService, load_engine
from finpulse.settings import KafkaSettings, Settings
from finpulse.storage import Storage
from ingest.producer import PostProducer, post_key
from ingest.topics import ensure_topics
from models.inference import SentimentEngine
from tests.conftest import POSTGRES_ADMIN_URL
from tests.e2e.faults import wait_for
from tests.e2e.posts import CALM, T0
from tests.ingest.kafka_io import read_topic

pytestmark = [pytest.mark.timeout(400), pytest.mark.postgres]

BATCH = 16
# Each scorer connection gives up on a lock after this long: a held lock is a transient fault.
LOCK_TIMEOUT = "?options=-c%20lock_timeout%3D300"


@pytest.fixture(scope="module")
def engine() -> SentimentEngine:
    # float32: scores of one text agree across batch compositions to ~1e-6 (bf16 would not).
    settings = Settings.load(model={"dtype": "float32"})
    return load_engine(settings, settings.model.path)


@pytest.fixture()
def databases() -> Iterator[list[str]]:
    """Three fresh PostgreSQL databases, dropped afterwards."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"finpulse_test_{uuid.uuid4().hex[:12]}" for _ in range(3)]
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield [POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}" for name in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class ExplodingEngine:
    """The real engine, except that a text containing ``EXPLODE`` makes it raise; counts calls."""

    def __init__(self, engine: SentimentEngine) -> None:
        self._engine = engine
        self.version, self.manifest = engine.version, engine.manifest
        self.calls = 0

    def predict(self, texts, *, sources=None):
        self.calls += 1
        if any("EXPLODE" in text for text in texts):
            raise IndexError("index out of range in self")
        return self._engine.predict(texts, sources=sources)


class TableLock:
    """Another session's ``ACCESS EXCLUSIVE`` lock on ``scores``: the scorer's stores time out."""

    def __init__(self, url: str) -> None:
        self._engine = sa.create_engine(url)
        self._conn: sa.Connection | None = None

    def hold(self) -> None:
        self._conn = self._engine.connect()
        self._conn.execute(sa.text("LOCK TABLE scores IN ACCESS EXCLUSIVE MODE"))

    def release(self) -> None:
        if self._conn is not None:
            self._conn.rollback()
            self._conn.close()
            self._conn = None
        self._engine.dispose()


class FaultyScorer(ScorerService):
    """Takes the lock when the ``lock_at``-th batch is stored (its own commit is done), so
    the next batch's store meets it; ``on_lock`` runs then (e.g. a releaser thread)."""

    lock: TableLock | None = None
    lock_at = 0
    on_lock = None
    _stored = 0

    def checkpoint(self, name: str) -> None:
        if name == "after_insert" and self.lock is not None:
            self._stored += 1
            if self._stored == self.lock_at:
                self.lock.hold()
                if self.on_lock is not None:
                    self.on_lock()


def post(i: int, text: str | None = None, **fields) -> Post:
    text = text or CALM[i % len(CALM)].format(name=f"Company {i % 13}")
    values = {"id": f"v-{i}", "source": "news", "text": text,
              "published_at": T0 + timedelta(seconds=i), "tickers": ("AAPL",), **fields}
    return Post(**values)


def stream() -> tuple[list[bytes], Counter[str], list[str]]:
    """The raw messages, the DLQ reasons they must cause, and the ids that must be stored."""
    messages: list[bytes] = []
    reasons: Counter[str] = Counter()
    valid: list[str] = []
    for i in range(96):
        if i % 11 == 5:  # a near-duplicate of the post before it: same cluster
            messages.append(post(i, post(i - 1).text + " (updated)").model_dump_json().encode())
        else:
            messages.append(post(i).model_dump_json().encode())
        valid.append(f"v-{i}")
        if i == 20:
            messages.append(b"{this is not json")
            reasons["not_json"] += 1
        if i == 30:  # v-3 again with other text, batches later: refused, v-3 stays as stored
            messages.append(post(3, "Microsoft cuts jobs", tickers=("MSFT",)).model_dump_json().encode())
            reasons["conflicting_id"] += 1
        if i == 31:  # v-31 again with another time, in the same batch
            messages.append(post(31, published_at=T0).model_dump_json().encode())
            reasons["conflicting_id"] += 1
        if i == 40:  # v-7 again, same content: a redelivery, stored once, silently
            messages.append(post(7).model_dump_json().encode())
        if i == 50:
            messages.append(post(1000, "Apple EXPLODE dividend").model_dump_json().encode())
            reasons["internal"] += 1
        if i == 70:  # passes decoding; the test's CHECK constraint makes PostgreSQL refuse it
            messages.append(post(1001, "Apple REFUSE dividend").model_dump_json().encode())
            reasons["db_refused"] += 1
    return messages, reasons, valid


def run_once(kafka: KafkaSettings, url: str, engine: SentimentEngine, *, pipeline: bool,
             total: int, lock_at: int = 0) -> tuple[Metrics, FaultyScorer]:
    """One scorer over the stream in its own group, into ``url``, its own scored/DLQ topics."""
    tag = uuid.uuid4().hex[:8]
    kafka = kafka.model_copy(update={"group_id": f"g-{tag}", "scored_topic": f"scored-{tag}",
                                     "dlq_topic": f"dlq-{tag}"})
    ensure_topics(kafka, partitions=1)
    settings = Settings.load(
        database_url=url, kafka=kafka.model_dump(), metrics={"enabled": False},
        scorer={"max_batch_size": BATCH, "max_wait_ms": 50, "retry_base_s": 0.2,
                "retry_cap_s": 0.5, "pipeline": pipeline},
    )
    storage = Storage(url + LOCK_TIMEOUT)
    storage.migrate()
    with storage.begin() as conn:
        conn.execute(sa.text("ALTER TABLE posts ADD CONSTRAINT test_refuse CHECK (text NOT LIKE '%REFUSE%')"))
    metrics = Metrics(CollectorRegistry())
    scorer = FaultyScorer(settings, engine=ExplodingEngine(engine), storage=storage, metrics=metrics)
    lock = TableLock(url)
    retries = ("finpulse_scorer_retries_total", {"operation": "store"})
    if lock_at:
        def release_after_a_retry() -> None:
            wait_for(lambda: (metrics.registry.get_sample_value(*retries) or 0) >= 1, 120, "a store retry")
            lock.release()

        scorer.lock, scorer.lock_at = lock, lock_at
        scorer.on_lock = lambda: threading.Thread(target=release_after_a_retry, daemon=True).start()
    try:
        scorer.run(threading.Event(), until_consumed=total)
    finally:
        scorer.close()
        lock.release()
        storage.dispose()
    return metrics, scorer


def outcome(kafka: KafkaSettings, scorer: FaultyScorer, url: str, dlq_count: int, stored_count: int):
    """What a run left: stored posts and scores, the DLQ, the scored topic, committed offsets."""
    cfg = scorer.settings.kafka
    storage = Storage(url)
    try:
        rows = sorted(storage.scores(limit=10_000), key=lambda p: p.id)
        with storage.begin() as conn:
            dirty = conn.execute(sa.text("SELECT ticker, minute_start, n FROM dirty_windows "
                                         "ORDER BY 1, 2")).all()
    finally:
        storage.dispose()
    dlq = Counter((dict(r.headers)["reason"].decode(), r.value) for r in
                  read_topic(cfg, cfg.dlq_topic, dlq_count))
    published = Counter(json.loads(r.value)["id"] for r in read_topic(cfg, cfg.scored_topic, stored_count + 5))
    return rows, dirty, dlq, published, committed(cfg)


def committed(kafka: KafkaSettings) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=kafka.group_id,
                             enable_auto_commit=False)
    try:
        return sum(consumer.committed(TopicPartition(topic, 0)) or 0 for topic in kafka.raw_topics)
    finally:
        consumer.close()


def publish(kafka: KafkaSettings, messages: list[bytes]) -> None:
    ensure_topics(kafka, partitions=1)
    with PostProducer(kafka) as producer:
        for value in messages:  # one partition of one topic: one order of consumption
            producer.publish_raw(kafka.news_topic, value, key=post_key(post(0)))
        producer.flush()


def test_pipelined_stores_publishes_and_commits_what_the_serial_scorer_does(
    kafka_settings, databases, engine
):
    messages, reasons, valid = stream()
    publish(kafka_settings, messages)
    results = {}
    for pipeline, url in ((False, databases[0]), (True, databases[1])):
        metrics, scorer = run_once(kafka_settings, url, engine, pipeline=pipeline,
                                   total=len(messages), lock_at=3)
        # The transient fault happened, was retried, and cost nothing.
        assert metrics.registry.get_sample_value(
            "finpulse_scorer_retries_total", {"operation": "store"}) >= 1
        results[pipeline] = outcome(kafka_settings, scorer, url, sum(reasons.values()), len(valid))

    serial, pipelined = results[False], results[True]
    rows, dirty, dlq, published, offsets = serial
    # The serial scorer is right (so that equality below means something).
    assert [p.id for p in rows] == sorted(valid)
    assert Counter(reason for reason, _ in dlq) == reasons
    assert published == Counter(valid) + Counter(["v-7"])  # the redelivered v-7 is published again
    assert offsets == len(messages)
    assert next(p for p in rows if p.id == "v-3").tickers == ("AAPL",)  # first write won
    assert next(p for p in rows if p.id == "v-5").cluster_id == "v-4"  # near-duplicates clustered

    p_rows, p_dirty, p_dlq, p_published, p_offsets = pipelined
    assert p_offsets == offsets
    assert p_dlq == dlq
    assert p_published == published
    assert p_dirty == dirty
    assert len(p_rows) == len(rows)
    for mine, theirs in zip(p_rows, rows, strict=True):
        # Everything but the timestamps and the model's floats (batch composition may
        # differ between the runs, and matrix products with it, by ~1e-6) is identical.
        same = {"scored_at", "score", "probabilities", "confidence"}
        assert mine.model_dump(exclude=same) == theirs.model_dump(exclude=same)
        assert mine.score == pytest.approx(theirs.score, abs=1e-4)
        assert mine.confidence == pytest.approx(theirs.confidence, abs=1e-4)
        assert mine.probabilities == pytest.approx(theirs.probabilities, abs=1e-4)


def test_an_abandoned_batch_commits_nothing_after_it(kafka_settings, databases, engine):
    """Stop during a store outage with the next batch already scored: neither is stored,
    published or committed, and the next scorer of the group stores both, once."""
    messages = [post(i).model_dump_json().encode() for i in range(6 * BATCH)]
    publish(kafka_settings, messages)
    tag = uuid.uuid4().hex[:8]
    kafka = kafka_settings.model_copy(update={"group_id": f"g-{tag}", "scored_topic": f"scored-{tag}",
                                              "dlq_topic": f"dlq-{tag}"})
    ensure_topics(kafka, partitions=1)
    url = databases[2]
    settings = Settings.load(
        database_url=url, kafka=kafka.model_dump(), metrics={"enabled": False},
        scorer={"max_batch_size": BATCH, "max_wait_ms": 50, "retry_base_s": 0.2, "retry_cap_s": 0.5},
    )
    assert settings.scorer.pipeline  # the default
    storage = Storage(url + LOCK_TIMEOUT)
    storage.migrate()
    metrics = Metrics(CollectorRegistry())
    counting = ExplodingEngine(engine)
    scorer = FaultyScorer(settings, engine=counting, storage=storage, metrics=metrics)
    scorer.lock, scorer.lock_at = TableLock(url), 2
    completed: list[int] = []
    stop = threading.Event()

    def stop_once_the_next_batch_is_scored() -> None:
        wait_for(lambda: (metrics.registry.get_sample_value(
            "finpulse_scorer_retries_total", {"operation": "store"}) or 0) >= 1, 120, "a store retry")
        # Batches 1-2 done, 3 failing to store, 4 handed to the model: wait until it is scored.
        wait_for(lambda: counting.calls >= 4, 120, "the batch after the failing one to be scored")
        stop.set()

    scorer.on_lock = lambda: threading.Thread(target=stop_once_the_next_batch_is_scored, daemon=True).start()
    try:
        scorer.run(stop, on_batch=completed.append)
    finally:
        scorer.close()
        scorer.lock.release()
    assert len(completed) == 2, "the loop ended with batch 3 abandoned"
    done = sum(completed)
    assert counting.calls >= 4 and scorer.stats.consumed == done
    assert committed(kafka) == done
    assert storage.count_posts() == done
    assert len(read_topic(kafka, kafka.scored_topic, done + BATCH)) == done

    # The group's next scorer (no fault) resumes at the committed offset and stores the rest once.
    again = ScorerService(settings, engine=engine, storage=storage, metrics=Metrics(CollectorRegistry()))
    try:
        again.run(threading.Event(), until_consumed=len(messages) - done)
    finally:
        again.close()
    assert committed(kafka) == len(messages)
    assert sorted(p.id for p in storage.scores(limit=1000)) == sorted(f"v-{i}" for i in range(len(messages)))
    assert storage.count_scores() == len(messages)
    assert len(read_topic(kafka, kafka.scored_topic, len(messages) + BATCH)) == len(messages)
    storage.dispose()

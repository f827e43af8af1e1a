"""The scorer service: raw posts from Kafka -> classifier -> database -> ``finpulse.scored``.

Delivery is at-least-once from Kafka and effectively-once in the database. One cycle:

1. poll a micro-batch (at most ``max_batch_size`` messages or ``max_wait_ms``); the
   consumer has already sent the malformed ones to the dead-letter topic, flushed;
2. score the valid posts in one call to the engine;
3. refuse re-published ids with other content (first write wins, ``conflicting_id``),
   reading the batch's already-stored posts once, and give each post its near-duplicate
   cluster;
4. write posts and scores in one transaction (idempotent: unique post id, unique
   score per post and model version);
5. publish what a step refused to the DLQ, then the scored posts, and flush;
6. commit the batch's offsets.

A crash anywhere before 6 replays the batch; the database ignores what it already holds.
Between 3 and 4 a shadow model, if the registry flags one, scores the batch too; its scores
are stored in step 4's transaction, apart from the live ones (``finpulse.services.shadow``).

Pipelining (``scorer.pipeline``, on by default): step 2 of the next batch runs on a worker
thread while this thread does steps 3-6 of the current one (the engine releases the GIL),
so the model is not idle during database writes, publishing and commits. Only steps 1-2
run ahead: the consumer, the producer, the database writes, the clustering (stateful) and
the commits stay on this thread, batch after batch in poll order, so a batch is committed
only after every earlier batch was, and a batch that fails or is abandoned stops the loop
before anything polled after it is stored or committed. With ``pipeline`` off every batch
finishes step 6 before the next is polled.

Faults follow the one policy of ``finpulse.services.policy``:

- message-level: one message that the model or the database refuses (found by bisecting
  the batch) goes to the DLQ with a reason (``db_refused``, ``internal`` with the
  exception type, ...); the rest of the batch goes on;
- transient (database or broker unreachable, timeouts) in any step, the model-reload check
  and polling included: retried with capped exponential back-off and jitter while the
  consumer keeps polling with its partitions paused, so it stays in its group; a failed
  producer is replaced (a restarted broker forgets producer ids);
- fatal (configuration, a model that cannot load): raised, and the CLI exits 1 with one line.

``ScorerService.checkpoint`` marks the steps of a batch (``CHECKPOINTS``); it does nothing,
and exists so that fault-injection tests can crash the process at an exact point.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timezone
from typing import TypeVar

from finpulse.errors import IngestError
from finpulse.metrics import Metrics
from finpulse.schemas import ScoredPost
from finpulse.services.batch import (
    BatchAbandoned,
    Refused,
    ScoredBatch,
    ScorerStats,
    partition_progress,
)
from finpulse.services.heap import HeapKeeper
from finpulse.services.pipeline import run_pipelined, run_serial
from finpulse.services.policy import Backoff, classify, retry_transient
from finpulse.services.reloader import (
    ModelReloader,
    load_engine,
    model_input,
    register_model,
)
from finpulse.services.shadow import ShadowMode
from finpulse.services.validation import as_dead_letter, run_bisecting, split_conflicts
from finpulse.settings import Settings
from finpulse.storage import Storage
from ingest.consumer import ConsumedPost, PolledBatch, PostConsumer
from ingest.dedup import NearDuplicateIndex
from ingest.producer import PostProducer
from models.inference import SentimentEngine

__all__ = [
    "CHECKPOINTS", "BatchAbandoned", "ModelReloader", "ScoredBatch", "ScorerService", "ScorerStats",
    "load_engine", "model_input", "partition_progress", "register_model",
]

logger = logging.getLogger(__name__)

CHECKPOINTS = ("after_decode", "after_insert", "after_publish", "before_commit")
# Seconds to wait for the broker to acknowledge a publish before treating it as a fault.
FLUSH_TIMEOUT_S = 30.0

T = TypeVar("T")


class ScorerService:
    """Consumes raw posts, scores them in micro-batches and stores them; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: SentimentEngine,
        storage: Storage,
        metrics: Metrics,
        consumer: PostConsumer | None = None,
        producer: PostProducer | None = None,
        reloader: ModelReloader | None = None,
        shadow: SentimentEngine | None = None,
    ) -> None:
        cfg = settings.scorer
        self.settings = settings
        self.storage = storage
        self.metrics = metrics
        self.consumer = consumer or PostConsumer(
            settings.kafka,
            max_text_chars=cfg.max_text_chars,
            max_message_bytes=cfg.max_message_bytes,
            future_tolerance_s=cfg.future_tolerance_s,
        )
        self._producer = producer
        self.reloader = reloader
        self.stats = ScorerStats()
        self._backoff = Backoff(base_s=cfg.retry_base_s, cap_s=cfg.retry_cap_s)
        self._stop = threading.Event()
        self._next_stall_check = 0.0
        # Near-duplicate clusters, in memory per process, warmed from the newest stored posts.
        self.dedup = NearDuplicateIndex(max_posts=cfg.dedup_max_posts)
        self.dedup.seed(storage.scores(limit=min(20_000, cfg.dedup_max_posts)))
        self._use(engine)
        self.shadow = ShadowMode(metrics, shadow)
        # Everything loaded so far lives as long as the process: out of the collector's reach.
        self._heap = HeapKeeper(self.engine, self.shadow.engine)

    # -- test hook -------------------------------------------------------------------------

    def checkpoint(self, name: str) -> None:
        """A named step of a batch, one of ``CHECKPOINTS``; does nothing.

        Fault-injection tests replace it (in a harness process) to crash at that step.
        """

    # -- one batch ---------------------------------------------------------------------------

    def process(self, batch: PolledBatch) -> int:
        """Score, store, publish and commit one polled batch; returns the posts scored.

        Message-level faults send their message to the DLQ; transient ones are retried.

        Raises:
            BatchAbandoned: ``stop`` was set while retrying; nothing was committed.
            FinpulseError: a fatal fault (configuration, model).
        """
        self.checkpoint("after_decode")
        return self.complete(self.score_batch(batch, self.engine))

    def score_batch(self, batch: PolledBatch, engine: SentimentEngine) -> ScoredBatch:
        """Steps 1-2 of a batch: score its valid posts. Touches neither Kafka nor the database,
        so it may run on another thread while an earlier batch is completed."""
        started = time.perf_counter()
        pairs, failed = self._score(batch.posts, engine)
        return ScoredBatch(batch, pairs, failed, time.perf_counter() - started)

    def complete(self, scored: ScoredBatch) -> int:
        """Steps 3-6 of a batch: refuse conflicts, cluster, store, publish, commit.

        Returns:
            The number of posts stored (new or already there) and published.

        Raises:
            BatchAbandoned: ``stop`` was set while retrying; nothing was committed.
            FinpulseError: a fatal fault (configuration, model).
        """
        batch = scored.batch
        accepted, refused, checked = self._guard(
            "store", lambda: split_conflicts(self.storage, [c for c, _ in scored.pairs])
        )
        keep = {id(consumed) for consumed in accepted}
        pairs = self._cluster([pair for pair in scored.pairs if id(pair[0]) in keep])
        refused += scored.failed
        shadow = self.shadow.score(pairs, self.engine.version)
        started = time.perf_counter()
        new_rows, stored, failed = self._store(pairs, checked, shadow)
        self.metrics.db_write_latency.observe(time.perf_counter() - started)
        refused += failed
        if refused:
            self._guard("publish", lambda: self.consumer.dead_letter(refused))
        self.checkpoint("after_insert")
        stored_ms = time.time() * 1000.0
        if stored:
            self._guard("publish", lambda: self._publish([post for _, post in stored]))
        self.checkpoint("after_publish")
        self.consumer.mark_durable(batch)
        self.checkpoint("before_commit")
        self._commit(batch)
        self._count(batch, refused, len(stored))
        if scored.pairs:
            self.stats.inference_s += scored.inference_s
            self.metrics.inference_latency.observe(scored.inference_s)
            self.metrics.batch_size.observe(len(scored.pairs))
        self.stats.new_rows += new_rows
        self.metrics.posts_scored.inc(len(pairs))
        self.metrics.scores_stored.inc(new_rows)
        for consumed, _ in stored:
            self.metrics.end_to_end_latency.observe(max(stored_ms - consumed.timestamp_ms, 0.0) / 1000.0)
        return len(stored)

    def _score(
        self, posts: Sequence[ConsumedPost], engine: SentimentEngine
    ) -> tuple[list[tuple[ConsumedPost, ScoredPost]], Refused]:
        """Score in one engine call; an input that makes the model fail is isolated (``internal``)."""
        now = datetime.now(timezone.utc)

        def predict(items: Sequence[ConsumedPost]) -> list[tuple[ConsumedPost, ScoredPost]]:
            predictions = engine.predict([model_input(c.post) for c in items],
                                         sources=[c.post.source for c in items])
            return [
                (c, ScoredPost.from_prediction(c.post, pred, model_version=engine.version,
                                               scored_at=now))
                for c, pred in zip(items, predictions, strict=True)
            ]

        done, failed = run_bisecting(posts, predict)
        return [pair for part in done for pair in part], self._dead_letters(failed)

    def _cluster(
        self, pairs: Sequence[tuple[ConsumedPost, ScoredPost]]
    ) -> list[tuple[ConsumedPost, ScoredPost]]:
        """Give each post its near-duplicate cluster (the same story re-published counts once)."""
        clusters = self.dedup.assign_all([post for _, post in pairs])
        return [
            (consumed, post.model_copy(update={"cluster_id": cluster}))
            for (consumed, post), cluster in zip(pairs, clusters, strict=True)
        ]

    def _store(
        self,
        pairs: Sequence[tuple[ConsumedPost, ScoredPost]],
        checked: Collection[str],
        shadow: dict[str, ScoredPost],
    ) -> tuple[int, list[tuple[ConsumedPost, ScoredPost]], Refused]:
        """Store the scored posts with their shadow scores; rows the database refuses are
        isolated (``db_refused``).

        ``checked``: ids ``split_conflicts`` just found stored with the same content.
        """

        def save(items: Sequence[tuple[ConsumedPost, ScoredPost]]) -> int:
            return self.storage.save_scored(
                [post for _, post in items], progress=partition_progress(items), checked=checked,
                shadow=[shadow[post.id] for _, post in items if post.id in shadow],
                on_shadow_error=lambda exc: self.shadow.failed("store", exc),
            )

        def attempt() -> tuple[list[int], list[tuple[tuple[ConsumedPost, ScoredPost], BaseException]]]:
            return run_bisecting(pairs, save)

        counts, failed = self._guard("store", attempt)
        refused_ids = {id(pair) for pair, _ in failed}
        stored = [pair for pair in pairs if id(pair) not in refused_ids]
        return sum(counts), stored, self._dead_letters([(pair[0], exc) for pair, exc in failed])

    @staticmethod
    def _dead_letters(failed: Sequence[tuple[ConsumedPost, BaseException]]) -> Refused:
        refused = []
        for consumed, exc in failed:
            entry = as_dead_letter(exc)
            if entry.reason == "internal":
                logger.error("unexpected %s on %s[%d]@%d", entry.detail, consumed.topic,
                             consumed.partition, consumed.offset, exc_info=exc)
            refused.append((consumed, entry))
        return refused

    def _publish(self, posts: Sequence[ScoredPost]) -> None:
        producer = self.producer
        for post in posts:
            producer.publish_scored(post)
        producer.flush(timeout=FLUSH_TIMEOUT_S)

    def _commit(self, batch: PolledBatch) -> None:
        try:
            self._guard("commit", lambda: self.consumer.commit(batch))
        except IngestError as exc:
            if exc.transient:
                raise
            # A rebalance moved the partitions: their new owner gets the batch again and
            # the database ignores what it already holds.
            logger.warning("batch not committed (%s); its partitions' new owner re-reads it", exc)

    # -- the policy ---------------------------------------------------------------------------

    @property
    def producer(self) -> PostProducer:
        """The producer of ``finpulse.scored``; made again after a failure."""
        if self._producer is None:
            self._producer = PostProducer(self.settings.kafka)
        return self._producer

    def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception as exc:  # a broken producer must not hide the fault being retried
                logger.debug("closing a failed producer: %s", exc)

    def _guard(self, operation: str, action: Callable[[], T]) -> T:
        """Run ``action``, retrying transient faults with back-off while staying in the group.

        Raises:
            BatchAbandoned: ``stop`` was set during the retries.
            Exception: a message-level or fatal fault of ``action``, unchanged.
        """

        def on_retry(exc: BaseException, delay: float) -> None:
            self.metrics.scorer_faults.labels(kind="transient").inc()
            self.metrics.scorer_retries.labels(operation=operation).inc()
            if operation == "publish":
                self._reset_producer()

        result = retry_transient(
            lambda: (action(),),
            stop=self._stop,
            what=operation,
            backoff=self._backoff,
            on_retry=on_retry,
            wait=self._keep_alive,
            attempt_first=True,
        )
        if result is None:
            raise BatchAbandoned(f"stopped while retrying {operation}")
        return result[0]

    def _keep_alive(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.consumer.keep_alive(min(left, 1.0))

    # -- bookkeeping --------------------------------------------------------------------------

    def _count(self, batch: PolledBatch, refused: Refused, stored: int) -> None:
        for consumed in batch.posts:
            self.metrics.messages_consumed.labels(topic=consumed.topic).inc()
        for bad in batch.invalid:
            self.metrics.messages_consumed.labels(topic=bad.topic or "unknown").inc()
        for bad in [*batch.invalid, *(error for _, error in refused)]:
            self.metrics.messages_invalid.labels(reason=bad.reason).inc()
            kind = "internal" if bad.reason == "internal" else "message"
            self.metrics.scorer_faults.labels(kind=kind).inc()
        self.metrics.last_batch_timestamp.set_to_current_time()
        lag = self.consumer.lag()
        if lag is not None:
            self.metrics.consumer_lag.set(lag)
        self.stats.batches += 1
        self.stats.consumed += len(batch)
        self.stats.invalid += len(batch.invalid) + len(refused)
        self.stats.scored += stored

    def _reload_check(self) -> SentimentEngine:
        assert self.reloader is not None
        return self.reloader.maybe_reload(self.engine)

    def _use(self, engine: SentimentEngine) -> None:
        self.engine = engine
        self.metrics.set_model(engine.version, base=str(engine.manifest.get("base", "")),
                               method=str(engine.manifest.get("method", "")))

    def run(
        self,
        stop: threading.Event,
        *,
        until_consumed: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> ScorerStats:
        """Poll and process until ``stop`` is set (or ``until_consumed`` messages were handled).

        When ``stop`` is set, the batches in hand (with ``pipeline``: the one being
        completed and the one already scored or being scored) are finished and committed,
        in order, unless a step waits out a transient fault: then that batch and any after
        it are abandoned uncommitted (delivered again).

        Args:
            stop: set by a signal handler or another thread to end the loop.
            until_consumed: end once this many messages (valid and invalid) were consumed.
            on_batch: called with the number of messages of each processed batch.

        Raises:
            FinpulseError: a fatal fault; counted as ``finpulse_scorer_faults_total{kind="fatal"}``.
        """
        self._stop = stop
        self.stats.started = time.perf_counter()
        try:
            loop = run_pipelined if self.settings.scorer.pipeline else run_serial
            loop(self, stop, until_consumed, on_batch)
        except BatchAbandoned as exc:
            logger.warning("%s; the batches in hand are not committed and will be delivered again", exc)
        except Exception as exc:
            if classify(exc) == "fatal":
                self.metrics.scorer_faults.labels(kind="fatal").inc()
                logger.error("fatal: %s: %s", type(exc).__name__, exc)
            raise
        finally:
            self.stats.finished = time.perf_counter()
        return self.stats

    def next_batch(self, ready: Callable[[], bool] | None = None) -> PolledBatch:
        """Check for a new model (models change between batches only), then poll a batch.

        Args:
            ready: ``PostConsumer.poll_batch``'s ``ready``: stop waiting once it is true.

        Raises:
            BatchAbandoned: ``stop`` was set while a transient fault was retried.
        """
        cfg = self.settings.scorer
        if self.reloader is not None:
            engine = self._guard("reload", self._reload_check)
            if engine is not self.engine:
                self._use(engine)
            self.shadow.follow(self.reloader, self.engine.version)
        self._heap.batch(self.engine, self.shadow.engine)
        batch = self._guard(
            "poll", lambda: self.consumer.poll_batch(cfg.max_batch_size, cfg.max_wait_ms, ready=ready)
        )
        self._check_progress()
        return batch

    def _check_progress(self) -> None:
        """Every quarter of ``scorer.stall_after_s``: count the partitions that stalled.

        Best effort: a broker that does not answer is the poll's business, not this check's.
        """
        after = self.settings.scorer.stall_after_s
        now = time.monotonic()
        if now < self._next_stall_check:
            return
        self._next_stall_check = now + after / 4
        try:
            stalled = self.consumer.stalled(after, now=now)
        except IngestError as exc:
            logger.debug("stall check skipped: %s", exc)
            return
        self.metrics.stalled_partitions.set(len(stalled))

    def close(self) -> None:
        self.consumer.close()
        if self._producer is not None:
            self._producer.close()

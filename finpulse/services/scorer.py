"""The scorer service: raw posts from Kafka -> classifier -> database -> ``finpulse.scored``.

Delivery is at-least-once from Kafka and effectively-once in the database. One cycle:

1. poll a micro-batch (at most ``max_batch_size`` messages or ``max_wait_ms``); the
   consumer has already sent the malformed ones to the dead-letter topic, flushed;
2. score the valid posts in one call to the engine;
3. write posts and scores in one transaction (idempotent: unique post id, unique
   score per post and model version);
4. publish the scored posts and flush;
5. commit the batch's offsets.

A crash anywhere before 5 replays the batch; the database ignores what it already holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from finpulse.errors import IngestError, ModelError, StorageError
from finpulse.metrics import Metrics
from finpulse.schemas import Post, ScoredPost
from finpulse.settings import Settings
from finpulse.storage import Storage
from finpulse.storage.registry import ModelRegistry
from ingest.consumer import PolledBatch, PostConsumer
from ingest.producer import PostProducer
from models import DEFAULT_MODEL_DIR
from models.inference import SentimentEngine

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


@dataclass
class ScorerStats:
    """What one scorer run did; the demo prints it."""

    batches: int = 0
    consumed: int = 0
    scored: int = 0
    invalid: int = 0
    new_rows: int = 0
    inference_s: float = 0.0
    started: float = 0.0
    finished: float = 0.0

    @property
    def elapsed_s(self) -> float:
        return max(self.finished - self.started, 1e-9)


def model_input(post: Post) -> str:
    """The text the classifier reads: the title, when there is one, then the body."""
    if post.title and post.title.strip() and post.title.strip() not in post.text:
        return f"{post.title.strip()}. {post.text}"
    return post.text


def load_engine(settings: Settings, path: str | Path | None) -> SentimentEngine:
    """Load a model with the engine options from settings (None: the bundled default)."""
    cfg = settings.model
    return SentimentEngine.load(
        path,
        device=cfg.device,
        dtype=cfg.dtype,
        max_length=cfg.max_length,
        batch_tokens=cfg.batch_tokens,
    )


def register_model(registry: ModelRegistry, engine: SentimentEngine, path: Path) -> None:
    """Record the model in use; the first model a database sees becomes its champion."""
    manifest = engine.manifest
    registry.register(
        engine.version,
        base=manifest["base"],
        method=manifest["method"],
        metrics=manifest.get("metrics", {}),
        artifact_path=str(Path(path).resolve()),
        trainable_params=manifest.get("trainable_params"),
    )
    if registry.champion() is None:
        registry.promote(engine.version)


class ModelReloader:
    """Follows the registry's champion; a model that fails to load never replaces a working one."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        *,
        interval_s: float = 30.0,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._interval_s = interval_s
        self._next_check = 0.0
        self._failed: set[str] = set()

    def initial(self) -> SentimentEngine:
        """The model to start with: the configured path, else the champion, else the bundled default.

        A model loaded from a path is registered, so every stored score's version is known.
        """
        path = self._settings.model.path
        if path is None:
            champion = self._registry.champion()
            if champion is not None:
                try:
                    return load_engine(self._settings, champion.artifact_path)
                except ModelError as exc:
                    logger.error("champion %s failed to load (%s); using the bundled default",
                                 champion.version, exc)
                    self._failed.add(champion.version)
        engine = load_engine(self._settings, path)
        register_model(self._registry, engine, path or DEFAULT_MODEL_DIR)
        return engine

    def maybe_reload(self, current: SentimentEngine, *, force: bool = False) -> SentimentEngine:
        """Return a new engine when the champion changed and loads cleanly, else ``current``."""
        now = time.monotonic()
        if self._settings.model.path is not None or (not force and now < self._next_check):
            return current
        self._next_check = now + self._interval_s
        champion = self._registry.champion()
        if champion is None or champion.version in (current.version, *self._failed):
            return current
        try:
            engine = load_engine(self._settings, champion.artifact_path)
        except ModelError as exc:
            self._failed.add(champion.version)
            logger.error("new champion %s failed to load, keeping %s: %s",
                         champion.version, current.version, exc)
            return current
        logger.info("switched model %s -> %s", current.version, engine.version)
        return engine


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
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.metrics = metrics
        self.consumer = consumer or PostConsumer(
            settings.kafka, max_text_chars=settings.scorer.max_text_chars
        )
        self.producer = producer or PostProducer(settings.kafka)
        self.reloader = reloader
        self.stats = ScorerStats()
        self._use(engine)

    def process(self, batch: PolledBatch) -> int:
        """Score, store, publish and commit one polled batch; returns the posts scored.

        Raises:
            StorageError: the database write failed; nothing was committed.
            IngestError: publishing or the offset commit failed; the batch comes again.
        """
        scored: list[ScoredPost] = []
        if batch.posts:
            posts = [consumed.post for consumed in batch.posts]
            started = time.perf_counter()
            predictions = self.engine.predict([model_input(post) for post in posts])
            inference_s = time.perf_counter() - started
            now = datetime.now(timezone.utc)
            scored = [
                ScoredPost.from_prediction(post, pred, model_version=self.engine.version, scored_at=now)
                for post, pred in zip(posts, predictions)
            ]
            started = time.perf_counter()
            # Event-time progress per input partition, stored with the rows (the watermark).
            progress: dict[tuple[str, int], datetime] = {}
            for consumed in batch.posts:
                key = (consumed.topic, consumed.partition)
                if key not in progress or consumed.post.published_at > progress[key]:
                    progress[key] = consumed.post.published_at
            new_rows = self.storage.save_scored(scored, progress=progress)
            self.metrics.db_write_latency.observe(time.perf_counter() - started)
            stored_ms = time.time() * 1000.0
            for post in scored:
                self.producer.publish_scored(post)
            self.producer.flush()
        self.consumer.commit(batch)
        self._count(batch, scored)
        if scored:
            self.stats.inference_s += inference_s
            self.stats.new_rows += new_rows
            self.metrics.inference_latency.observe(inference_s)
            self.metrics.batch_size.observe(len(scored))
            self.metrics.posts_scored.inc(len(scored))
            self.metrics.scores_stored.inc(new_rows)
            for consumed in batch.posts:
                self.metrics.end_to_end_latency.observe(max(stored_ms - consumed.timestamp_ms, 0.0) / 1000.0)
        return len(scored)

    def _count(self, batch: PolledBatch, scored: list[ScoredPost]) -> None:
        for consumed in batch.posts:
            self.metrics.messages_consumed.labels(topic=consumed.topic).inc()
        for bad in batch.invalid:
            self.metrics.messages_consumed.labels(topic=bad.topic or "unknown").inc()
            self.metrics.messages_invalid.labels(reason=bad.reason).inc()
        self.metrics.last_batch_timestamp.set_to_current_time()
        lag = self.consumer.lag()
        if lag is not None:
            self.metrics.consumer_lag.set(lag)
        self.stats.batches += 1
        self.stats.consumed += len(batch)
        self.stats.invalid += len(batch.invalid)
        self.stats.scored += len(scored)

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

        A batch in hand when ``stop`` is set is finished and committed: it is already
        scored or about to be, and finishing it is quicker than replaying it.

        Args:
            stop: set by a signal handler or another thread to end the loop.
            until_consumed: end once this many messages (valid and invalid) were consumed.
            on_batch: called with the number of messages of each processed batch.
        """
        cfg = self.settings.scorer
        backoff = 0.0
        self.stats.started = time.perf_counter()
        try:
            while not stop.is_set():
                if until_consumed is not None and self.stats.consumed >= until_consumed:
                    break
                if self.reloader is not None:
                    engine = self.reloader.maybe_reload(self.engine)
                    if engine is not self.engine:
                        self._use(engine)
                batch = self.consumer.poll_batch(cfg.max_batch_size, cfg.max_wait_ms)
                if batch.empty:
                    continue
                try:
                    self.process(batch)
                except StorageError as exc:
                    # Nothing of this batch was committed: poll it again once the database is back.
                    backoff = min(backoff * 2, MAX_BACKOFF_S) if backoff else 0.5
                    logger.error("database write failed (%s); retrying the batch in %.1f s", exc, backoff)
                    self.consumer.rewind(batch)
                    stop.wait(backoff)
                    continue
                except IngestError as exc:
                    # Typically a commit refused after a rebalance: the partitions' new owner
                    # gets the batch again and the database ignores what it already holds.
                    logger.warning("batch not committed (%s); it will be delivered again", exc)
                    continue
                backoff = 0.0
                if on_batch is not None:
                    on_batch(len(batch))
        finally:
            self.stats.finished = time.perf_counter()
        return self.stats

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()

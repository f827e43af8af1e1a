"""Re-score stored history with another registered model version, keeping both versions' scores.

The live scores stay what the alerts used ("what we knew then"); the new ones are stored
under their own version as ``scores.role = 'rescore'`` ("what we know now"), which nothing
live reads. Posts are read oldest first in batches (a keyset on ``published_at, id``), each
batch scored in one engine call and stored in one transaction. A post that the version
already scored (live, in shadow or by an earlier rescore) is skipped, so running it again,
or after an interruption, adds only what is missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from finpulse.errors import ModelError
from finpulse.schemas import ScoredPost
from finpulse.services.reloader import load_engine, model_input
from finpulse.settings import Settings
from finpulse.storage import Storage
from finpulse.storage.registry import ModelRegistry
from finpulse.storage.versions import count_to_rescore, posts_to_rescore, save_rescored
from models.inference import SentimentEngine

logger = logging.getLogger(__name__)


@dataclass
class RescoreResult:
    """What one rescore run did."""

    version: str
    since: datetime | None
    until: datetime | None
    todo: int = 0
    scored: int = 0
    stored: int = 0
    batches: int = 0
    seconds: float = 0.0


Progress = Callable[[RescoreResult], None]


def rescore(
    storage: Storage,
    engine: SentimentEngine,
    *,
    since: datetime | None,
    until: datetime | None,
    batch_size: int = 256,
    on_batch: Progress | None = None,
) -> RescoreResult:
    """Score the posts published in ``[since, until)`` that ``engine``'s version has not scored.

    Args:
        storage: the database.
        engine: the model to score with; its version names the new scores.
        since: from this publication time (None: the first post).
        until: before this publication time (None: up to the last).
        batch_size: posts per engine call and transaction.
        on_batch: called after each stored batch with the running totals.

    Returns:
        The totals.

    Raises:
        StorageError: the database refused or is unreachable (what was stored stays).
    """
    result = RescoreResult(engine.version, since, until)
    started = time.perf_counter()
    result.todo = count_to_rescore(storage, engine.version, since, until)
    after: tuple[datetime, str] | None = None
    while True:
        posts = posts_to_rescore(storage, engine.version, since, until, after=after,
                                 limit=batch_size)
        if not posts:
            break
        predictions = engine.predict([model_input(post) for post in posts],
                                     sources=[post.source for post in posts])
        now = datetime.now(timezone.utc)
        scored = [
            ScoredPost.from_prediction(post, prediction, model_version=engine.version,
                                       scored_at=now)
            for post, prediction in zip(posts, predictions, strict=True)
        ]
        result.stored += save_rescored(storage, scored)
        result.scored += len(scored)
        result.batches += 1
        result.seconds = time.perf_counter() - started
        after = (posts[-1].published_at, posts[-1].id)
        if on_batch is not None:
            on_batch(result)
    result.seconds = time.perf_counter() - started
    logger.info("rescored %d posts with %s (%d new scores) in %.1f s", result.scored,
                engine.version, result.stored, result.seconds)
    return result


def engine_for(settings: Settings, storage: Storage, version: str) -> SentimentEngine:
    """Load a registered version's artifact with the configured engine options.

    Raises:
        ConfigError: the version is not registered.
        ModelError: its artifact is missing or does not load, or it holds another version.
    """
    registered = ModelRegistry(storage).get(version)
    engine = load_engine(settings, registered.artifact_path)
    if engine.version != version:
        raise ModelError(f"{registered.artifact_path} holds model version {engine.version}, "
                         f"not {version}")
    return engine

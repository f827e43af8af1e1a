"""Shadow mode: a challenger scores the live stream beside the champion, without affecting alerts.

When the registry flags a shadow version (``finpulse registry shadow VERSION``), the scorer
loads it beside the champion and follows the flag as it follows the champion
(``ModelReloader.maybe_reload_shadow``). Each batch is scored by the shadow model after the
champion; its scores go into the batch's own transaction as ``scores.role = 'shadow'``,
which nothing live reads (``finpulse.storage.versions``): no aggregate, dirty marker, alert,
risk event, model-health check, evidence or default history view ever sees them.

A shadow model that fails to load, raises, or whose rows the database refuses is counted
(``finpulse_scorer_shadow_failures_total{stage}``) and logged, and the live path goes on
without it: nothing is retried or bisected for its sake. Its inference time is the one
cost it adds to each batch (``finpulse_scorer_shadow_inference_latency_seconds``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from finpulse.metrics import Metrics
from finpulse.schemas import ScoredPost
from finpulse.services.reloader import ModelReloader, model_input
from models.inference import SentimentEngine

logger = logging.getLogger(__name__)


class ShadowMode:
    """The shadow engine of one scorer (None: no shadow) and its metrics.

    Args:
        metrics: where agreement, confidence, latency and failures are counted.
        engine: a shadow engine to start with (tests inject one; the scorer follows the registry).
    """

    def __init__(self, metrics: Metrics, engine: SentimentEngine | None = None) -> None:
        self.metrics = metrics
        self.engine: SentimentEngine | None = None
        self._use(engine)

    def _use(self, engine: SentimentEngine | None) -> None:
        self.engine = engine
        self.metrics.set_shadow(engine.version if engine is not None else None)

    def follow(self, reloader: ModelReloader, champion: str) -> None:
        """Load, swap or drop the shadow engine as the registry says; a failure is only counted."""
        try:
            engine = reloader.maybe_reload_shadow(self.engine, champion)
        except Exception as exc:  # the shadow model must never stop the live path
            self.failed("load", exc)
            return
        if engine is not self.engine:
            self._use(engine)

    def score(
        self, pairs: Sequence[tuple[Any, ScoredPost]], champion: str
    ) -> dict[str, ScoredPost]:
        """The shadow model's scores of a scored batch, by post id ({} without one); never raises.

        Args:
            pairs: (consumed message, live-scored post) of the batch; the message's ``post``
                is what the model reads.
            champion: the live model's version (a shadow of the same version is skipped).
        """
        for _, post in pairs:
            self.metrics.confidence.labels(role="champion", source=post.source).observe(
                post.confidence)
        engine = self.engine
        if engine is None or not pairs or engine.version == champion:
            return {}
        started = time.perf_counter()
        try:
            predictions = engine.predict([model_input(consumed.post) for consumed, _ in pairs],
                                         sources=[consumed.post.source for consumed, _ in pairs])
            now = datetime.now(timezone.utc)
            scored = [
                ScoredPost.from_prediction(consumed.post, prediction,
                                           model_version=engine.version, scored_at=now)
                for (consumed, _), prediction in zip(pairs, predictions, strict=True)
            ]
        except Exception as exc:  # the shadow model must never stop the live path
            self.failed("score", exc)
            return {}
        self.metrics.shadow_inference_latency.observe(time.perf_counter() - started)
        for (_, live), mine in zip(pairs, scored, strict=True):
            agree = "true" if live.label == mine.label else "false"
            self.metrics.shadow_scored.labels(source=live.source, agree=agree).inc()
            self.metrics.confidence.labels(role="shadow", source=live.source).observe(
                mine.confidence)
        return {post.id: post for post in scored}

    def failed(self, stage: str, exc: BaseException) -> None:
        """Count and log a shadow failure at ``stage`` (``finpulse.metrics.SHADOW_STAGES``)."""
        self.metrics.shadow_failures.labels(stage=stage).inc()
        version = self.engine.version if self.engine is not None else "-"
        logger.warning("shadow model %s failed (%s); live scoring goes on: %s: %s",
                       version, stage, type(exc).__name__, exc)

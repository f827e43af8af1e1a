"""What a scorer batch carries between its steps, and what a scorer run did."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from finpulse.errors import MalformedMessage
from finpulse.schemas import ScoredPost
from ingest.consumer import ConsumedPost, PolledBatch

Refused = list[tuple[ConsumedPost, MalformedMessage]]


def partition_progress(
    items: Sequence[tuple[ConsumedPost, ScoredPost]],
) -> dict[tuple[str, int], datetime]:
    """The newest ``published_at`` per input partition: the monitor's watermark reads it."""
    progress: dict[tuple[str, int], datetime] = {}
    for consumed, post in items:
        key = (consumed.topic, consumed.partition)
        if key not in progress or post.published_at > progress[key]:
            progress[key] = post.published_at
    return progress


class BatchAbandoned(Exception):
    """``stop`` was set while a step of the batch waited out a transient fault."""


@dataclass(frozen=True)
class ScoredBatch:
    """A polled batch after the model (steps 1-2), waiting for steps 3-6.

    Attributes:
        batch: the batch as polled.
        pairs: each valid post the model scored, with its score, in poll order.
        failed: posts the model failed on (``internal``), for the DLQ.
        inference_s: seconds the engine took.
    """

    batch: PolledBatch
    pairs: list[tuple[ConsumedPost, ScoredPost]]
    failed: Refused
    inference_s: float


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

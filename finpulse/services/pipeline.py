"""The scorer's two loops: one batch at a time, or with the model one batch ahead.

A batch's work splits in two (``ScorerService.score_batch`` and ``ScorerService.complete``,
see ``finpulse.services.scorer``). The serial loop does both halves of a batch before it
polls the next. The pipelined loop polls batch k+1 and hands it to one worker thread, which
only scores it (the engine releases the GIL in its kernels), while this thread completes
batch k: conflict check, clustering, store, DLQ, publish, commit. So:

- batches are completed one by one, in poll order, on the calling thread, and the
  consumer, the producer and the database are used from that thread only;
- the worker scores batches in submission order, one at a time; at most one batch waits
  for it while another is scored;
- when a completion raises (a fatal fault, or ``BatchAbandoned`` during shutdown), the loop
  ends there: batches polled after it are never stored or committed (Kafka delivers them
  again), and a batch still being scored is waited for and dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finpulse.services.scorer import ScoredBatch, ScorerService

OnBatch = Callable[[int], None] | None


def run_serial(
    service: ScorerService, stop: threading.Event, until_consumed: int | None, on_batch: OnBatch
) -> None:
    """Poll, score, store, publish and commit one batch after another until ``stop``."""
    while not stop.is_set():
        if until_consumed is not None and service.stats.consumed >= until_consumed:
            break
        batch = service.next_batch()
        if batch.empty:
            continue
        service.process(batch)
        if on_batch is not None:
            on_batch(len(batch))


def run_pipelined(
    service: ScorerService, stop: threading.Event, until_consumed: int | None, on_batch: OnBatch
) -> None:
    """Like ``run_serial``, with each batch scored on a worker while the one before completes.

    When ``stop`` is set, the batch handed to the worker is completed too (it was polled
    before the stop), unless completing one fails first.
    """
    pending: Future[ScoredBatch] | None = None  # handed to the model, not completed yet
    pending_size = 0

    def finish(future: Future[ScoredBatch], size: int) -> None:
        service.complete(future.result())
        if on_batch is not None:
            on_batch(size)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="finpulse-scoring") as worker:
        try:
            while not stop.is_set():
                if until_consumed is not None and service.stats.consumed + pending_size >= until_consumed:
                    break
                # While the model scores a batch, poll only until it is done: on a slow
                # stream a scored batch must not wait max_wait_ms for the next to fill.
                batch = service.next_batch(pending.done if pending is not None else None)
                if batch.empty:
                    if pending is not None:
                        finish(pending, pending_size)
                        pending, pending_size = None, 0
                    continue
                service.checkpoint("after_decode")
                # The engine is chosen now: a model swapped in later scores later batches.
                scoring = worker.submit(service.score_batch, batch, service.engine)
                if pending is not None:
                    finish(pending, pending_size)
                pending, pending_size = scoring, len(batch)
            if pending is not None:
                finish(pending, pending_size)
                pending = None
        finally:
            if pending is not None:
                pending.cancel()  # not started yet: never scored; else waited for, then dropped

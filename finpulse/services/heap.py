"""Keeping the garbage collector's full passes off a service's long-lived objects.

A loaded scorer holds ~490,000 objects that CPython's cyclic garbage collector tracks (the
model's Python objects, transformers, torch, SQLAlchemy, pydantic), and every full
collection walks all of them with the process stopped: ~0.4 s each on a 2-core Zen 5 EPYC,
three of them in a 20,000-post drain (`gc.callbacks`, `bench/e2e.py`'s host-ceiling run).
Those objects live as long as the process, so the scorer moves them out of the collector's
reach once it has started (``gc.freeze``); a full collection then walks only what came
after (0.04-0.06 s each in the same drain).

A frozen object is never collected, so a model that is replaced must become collectable
again: when the engines in use change, everything is unfrozen at once and frozen again a
few batches later, once no batch in flight can still hold the old engine.
"""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger(__name__)


def settle() -> float:
    """Collect what is garbage now, then freeze every object still alive.

    Returns:
        The seconds it took (one full collection: the pause this saves later, once).
    """
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started


class HeapKeeper:
    """Freezes a service's heap once it has started, and again after each model change.

    Args:
        engines: the engines in use at start (``None`` for an empty slot).
        batches_after_change: batches to wait after the engines change before freezing again
            (the pipelined scorer may still score one batch with the engine it replaced).
    """

    def __init__(self, *engines: object, batches_after_change: int = 2) -> None:
        self._engines = engines
        self._wait = batches_after_change
        self._countdown = 0
        logger.debug("heap settled in %.3f s (%d objects frozen)", settle(), gc.get_freeze_count())

    def batch(self, *engines: object) -> None:
        """Call once a batch with the engines in use now."""
        if any(new is not old for new, old in zip(engines, self._engines, strict=True)):
            gc.unfreeze()  # the replaced engine is collectable again, cycles included
            self._engines = engines
            self._countdown = self._wait
        elif self._countdown:
            self._countdown -= 1
            if not self._countdown:
                logger.debug("heap settled again in %.3f s", settle())

    @property
    def frozen(self) -> bool:
        """Whether the heap is frozen now (False while a model change settles)."""
        return gc.get_freeze_count() > 0 and not self._countdown

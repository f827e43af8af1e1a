"""The scorer's heap keeper, with CPython's real garbage collector."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from finpulse.services.heap import HeapKeeper


class Engine:
    """Stands in for a model: an object in a reference cycle, as a loaded model's are."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.collect()


def test_what_was_alive_at_start_is_out_of_the_collectors_reach() -> None:
    startup = Engine()
    gone = weakref.ref(startup)
    keeper = HeapKeeper(Engine(), None)
    assert keeper.frozen and gc.get_freeze_count() > 0
    del startup
    gc.collect()
    assert gone() is not None  # frozen: a full collection did not even look at it


def test_a_replaced_engine_is_collected_and_the_heap_frozen_again_later() -> None:
    old = Engine()
    gone = weakref.ref(old)
    keeper = HeapKeeper(old, None, batches_after_change=2)
    keeper.batch(old, None)
    assert keeper.frozen

    new = Engine()
    keeper.batch(new, None)
    assert not keeper.frozen and gc.get_freeze_count() == 0
    del old
    gc.collect()
    assert gone() is None  # its cycle was collectable again

    keeper.batch(new, None)
    assert not keeper.frozen  # the batch in flight may still hold the old engine
    keeper.batch(new, None)
    assert keeper.frozen and gc.get_freeze_count() > 0


def test_a_shadow_engine_that_comes_or_goes_counts_as_a_change() -> None:
    live = Engine()
    keeper = HeapKeeper(live, None, batches_after_change=1)
    shadow = Engine()
    keeper.batch(live, shadow)
    assert not keeper.frozen
    keeper.batch(live, shadow)
    assert keeper.frozen
    keeper.batch(live, None)
    assert not keeper.frozen

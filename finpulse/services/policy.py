"""The one error policy of every finpulse service loop (scorer, monitor, notifier, API workers).

Every exception a service loop sees is classified here, once:

``message``    about one message's content, including what the database refuses for
               that row: the message goes to the dead-letter topic with a reason and the
               rest of its batch goes on.
``transient``  the database or the broker is unreachable, a timeout, a lost connection:
               retry with capped exponential back-off and jitter, then resume without loss.
``fatal``      bad configuration, a model that cannot load at start: the service exits
               non-zero with one clear line.

Anything unexpected while handling one message is a ``message`` fault with the DLQ reason
``internal`` (and the exception type in the detail): no single message may stop the stream.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from finpulse.errors import (
    ConfigError,
    IngestError,
    MalformedMessage,
    ModelError,
    StorageError,
)

logger = logging.getLogger(__name__)

Fault = Literal["message", "transient", "fatal"]
T = TypeVar("T")


def classify(exc: BaseException) -> Fault:
    """Which of the three faults ``exc`` is; see the module docstring.

    A ``StorageError`` is transient unless the database refused the data itself
    (``StorageError.transient`` is False); an ``IngestError`` about the broker is transient
    unless retrying cannot help (``IngestError.transient`` is False, e.g. a commit refused
    after a rebalance);
    configuration and model-loading errors are fatal; a ``MalformedMessage`` and anything
    else is a message-level fault.
    """
    if isinstance(exc, MalformedMessage):
        return "message"
    if isinstance(exc, StorageError):
        return "transient" if exc.transient else "message"
    if isinstance(exc, IngestError):
        return "transient" if exc.transient else "message"
    if isinstance(exc, (ConfigError, ModelError)):
        return "fatal"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "transient"
    return "message"


def internal_reason(exc: BaseException) -> MalformedMessage:
    """The DLQ entry for an unexpected exception while handling one message."""
    return MalformedMessage.internal(exc)


@dataclass
class Backoff:
    """Capped exponential back-off with full jitter (AWS architecture blog's "full jitter").

    ``next_delay()`` returns a random delay in ``[0, min(cap, base * 2**attempt)]`` and counts
    the attempt; ``reset()`` after a success starts over.
    """

    base_s: float = 0.5
    cap_s: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def retry_transient(
    action: Callable[[], T],
    *,
    stop: threading.Event,
    what: str,
    backoff: Backoff | None = None,
    on_retry: Callable[[BaseException, float], None] | None = None,
    wait: Callable[[float], object] | None = None,
    attempt_first: bool = False,
) -> T | None:
    """Run ``action`` until it succeeds, retrying transient faults with back-off.

    Args:
        action: the work; raises on failure.
        stop: set when the service is shutting down; ends the retries (returns None).
        what: a few words for the log line ("storing the batch").
        backoff: the back-off state; a fresh one by default.
        on_retry: called with the fault and the delay before each retry (metrics).
        wait: sleeps for the delay; default ``stop.wait`` (a consumer passes a function that
            keeps its group membership alive while it waits).
        attempt_first: run ``action`` once even when ``stop`` is already set (finish the
            work in hand); only the retries end on ``stop``.

    Returns:
        What ``action`` returned, or None when ``stop`` was set first.

    Raises:
        Any non-transient exception of ``action``, unchanged.
    """
    backoff = backoff or Backoff()
    sleep = wait or stop.wait
    while attempt_first or not stop.is_set():
        attempt_first = False
        try:
            result = action()
        except Exception as exc:
            if classify(exc) != "transient":
                raise
            delay = backoff.next_delay()
            logger.warning("%s failed (%s); retrying in %.1f s", what, exc, delay)
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
            continue
        backoff.reset()
        return result
    return None

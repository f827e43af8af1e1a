"""Graceful shutdown: SIGTERM and SIGINT set a stop event that service loops check."""

from __future__ import annotations

import logging
import signal
import threading

logger = logging.getLogger(__name__)


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """Return an event that SIGTERM/SIGINT set (only installable from the main thread)."""
    stop = stop or threading.Event()

    def _handle(signum: int, _frame: object) -> None:
        logger.info("received %s; stopping after the work in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)
    return stop

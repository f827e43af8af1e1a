"""Holding a named lease (``finpulse.storage.leases``) for as long as a job runs.

``LeaseKeeper`` takes the lease on entry (``LeaseHeld`` if another process has it), renews
it every third of its term from a thread, and frees it on exit. When renewal fails for
longer than the term (database unreachable) or another holder took the lease over, the
keeper sets ``lost``: the job should stop, as another process may start the same job now.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from types import TracebackType

from finpulse.errors import LeaseError, StorageError
from finpulse.storage import Storage
from finpulse.storage.leases import acquire_lease, new_holder, release_lease, renew_lease

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """A context manager holding the lease ``name`` for ``term_s`` at a time, renewed.

    Args:
        storage: the database.
        name: the lease (``retrain``).
        term_s: how long the lease holds without renewal; renewed every third of it.

    Attributes:
        holder: this keeper's holder name.
        lost: set once the lease can no longer be counted on.
    """

    def __init__(self, storage: Storage, name: str, term_s: float) -> None:
        self.storage = storage
        self.name = name
        self.term = timedelta(seconds=term_s)
        self.holder = new_holder()
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._held_until = 0.0  # time.monotonic() when the last renewal lapses

    def __enter__(self) -> LeaseKeeper:
        acquire_lease(self.storage, self.name, self.holder, self.term)
        self._held_until = time.monotonic() + self.term.total_seconds()
        self._thread = threading.Thread(target=self._renew_until_done, name=f"lease-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        try:
            release_lease(self.storage, self.name, self.holder)
        except StorageError as release_exc:
            # It lapses by itself at the end of its term.
            logger.warning("could not release the %s lease: %s", self.name, release_exc)

    def confirm(self) -> None:
        """Renew now and make sure the lease is still this keeper's (before a final step).

        Raises:
            LeaseError: the lease is lost.
        """
        if not self.lost.is_set() and not self._renew():
            self.lost.set()
        if self.lost.is_set():
            raise LeaseError(f"{self.name}: lease lost (another process may hold it)",
                             name=self.name)

    def _renew(self) -> bool:
        """Renew once; False when the lease is lost, True when held (or unknown but unlapsed)."""
        started = time.monotonic()
        try:
            held = renew_lease(self.storage, self.name, self.holder, self.term)
        except StorageError as exc:
            logger.warning("could not renew the %s lease: %s", self.name, exc)
            return time.monotonic() < self._held_until
        if held:
            self._held_until = started + self.term.total_seconds()
        else:
            logger.error("the %s lease was taken over by another process", self.name)
        return held

    def _renew_until_done(self) -> None:
        while not self._done.wait(self.term.total_seconds() / 3):
            if not self._renew():
                self.lost.set()
                return

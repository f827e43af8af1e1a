"""The notifier: moves alert events from the outbox to subscribers, reliably.

Each pass fans new outbox events out into deliveries, claims the due ones (a lease per
delivery, see ``finpulse.storage.outbox``) and hands each to a thread of a fixed pool, so a
slow or hanging subscriber holds one thread for at most its channel's time-out and never
delays the others, nor alerting (which only writes the outbox). Outcomes:

- acknowledged: ``delivered``;
- failed: retried after a capped exponential back-off with jitter (or the receiver's
  ``Retry-After``, if longer), up to ``max_attempts``; then ``dead``, kept, listed by
  ``finpulse deliveries list --status dead`` and ``GET /v1/deliveries?status=dead``, and
  counted in ``finpulse_notifier_deliveries_total{status="dead"}``;
- refused for good (``AlertDeliveryError.permanent``): ``dead`` at once.

A crash between a send and its mark leaves the delivery claimed; when the lease lapses
it is sent again with the same delivery id, which receivers deduplicate on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta

from finpulse.errors import AlertDeliveryError
from finpulse.metrics import Metrics
from finpulse.services.policy import Backoff, classify
from finpulse.storage import Storage, outbox, utcnow
from finpulse.storage.outbox import Delivery
from monitor.notifiers.base import Channel

logger = logging.getLogger(__name__)


@dataclass
class NotifierPolicy:
    """How hard the notifier tries.

    Attributes:
        workers: deliveries sent at the same time.
        max_attempts: attempts before a delivery is dead.
        backoff_base_s, backoff_cap_s: the retry back-off (exponential, jittered).
        lease: how long a claimed delivery is reserved; must exceed the channels' time-out.
    """

    workers: int = 8
    max_attempts: int = 8
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 300.0
    lease: timedelta = timedelta(seconds=40)


class Notifier:
    """Sends due deliveries through their channels; ``run_once`` or ``run``.

    Args:
        storage: the database with the outbox.
        channels: channel name (``webhook``, ``slack``, ``email``, ``kafka``) -> channel.
        policy: retries, concurrency and lease.
        metrics: where to count; None counts nothing.
        after_send: called after a channel acknowledged a delivery and before it is marked
            delivered (tests crash the process here).
    """

    def __init__(
        self,
        storage: Storage,
        channels: Mapping[str, Channel],
        policy: NotifierPolicy | None = None,
        metrics: Metrics | None = None,
        after_send: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.storage = storage
        self.channels = dict(channels)
        self.policy = policy or NotifierPolicy()
        self.metrics = metrics
        self._after_send = after_send
        self._pool = ThreadPoolExecutor(self.policy.workers, thread_name_prefix="notifier")
        self._in_flight: dict[Future[None], Delivery] = {}

    # ---- one delivery --------------------------------------------------------------------

    def _count(self, channel: str, status: str) -> None:
        if self.metrics is not None:
            self.metrics.notifier_deliveries.labels(channel=channel, status=status).inc()

    def _deliver(self, delivery: Delivery) -> None:
        channel = self.channels.get(delivery.channel)
        try:
            if channel is None:
                raise AlertDeliveryError(f"no {delivery.channel} channel is configured")
            channel.send(delivery)
        except Exception as exc:  # every failure is recorded; none may kill the worker
            self._failed(delivery, exc)
            return
        if self._after_send is not None:
            self._after_send(delivery)
        outbox.mark_delivered(self.storage, delivery.id)
        self._count(delivery.channel, "delivered")
        if self.metrics is not None:
            latency = (utcnow() - delivery.event_at).total_seconds()
            self.metrics.notifier_delivery_latency.observe(max(0.0, latency))
        logger.info("delivered %s (%s %s) to %s", delivery.id, delivery.kind, delivery.alert_id,
                    delivery.subscription_name)

    def _failed(self, delivery: Delivery, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        permanent = isinstance(exc, AlertDeliveryError) and exc.permanent
        if permanent or delivery.attempts >= self.policy.max_attempts:
            outbox.mark_dead(self.storage, delivery.id, error)
            self._count(delivery.channel, "dead")
            logger.error("delivery %s to %s is dead after %d attempt(s): %s", delivery.id,
                         delivery.subscription_name, delivery.attempts, error)
            return
        backoff = Backoff(self.policy.backoff_base_s, self.policy.backoff_cap_s,
                          attempt=delivery.attempts - 1)
        delay = backoff.next_delay()
        if isinstance(exc, AlertDeliveryError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self.policy.backoff_cap_s))
        outbox.mark_retry(self.storage, delivery.id, error, utcnow() + timedelta(seconds=delay))
        self._count(delivery.channel, "retried")
        logger.warning("delivery %s to %s failed (attempt %d): %s; retrying in %.1f s",
                       delivery.id, delivery.subscription_name, delivery.attempts, error, delay)

    def _run_delivery(self, delivery: Delivery) -> None:
        try:
            self._deliver(delivery)
        except Exception as exc:
            # The database failed while recording the outcome: the lease makes the
            # delivery come due again, with the same id.
            logger.warning("could not record delivery %s (%s); it will be retried after its "
                           "lease", delivery.id, exc)

    # ---- passes --------------------------------------------------------------------------

    def _reap(self) -> None:
        for future in [f for f in self._in_flight if f.done()]:
            self._in_flight.pop(future)

    def run_once(self) -> int:
        """Dispatch new events and start the due deliveries there is room for.

        Returns:
            The number of deliveries started.

        Raises:
            StorageError: the database is unreachable or refused.
        """
        self._reap()
        outbox.dispatch(self.storage)
        room = self.policy.workers - len(self._in_flight)
        started = 0
        if room > 0:
            busy = {d.id for d in self._in_flight.values()}
            for delivery in outbox.claim_due(self.storage, room, self.policy.lease, busy):
                self._in_flight[self._pool.submit(self._run_delivery, delivery)] = delivery
                started += 1
        if self.metrics is not None:
            self.metrics.notifier_outbox_pending.set(outbox.pending_count(self.storage))
        return started

    def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the deliveries in flight to finish."""
        wait(list(self._in_flight), timeout=timeout_s)
        self._reap()

    def run(self, stop: threading.Event, poll_interval_s: float = 1.0) -> None:
        """Run passes until ``stop`` is set, then let the deliveries in flight finish.

        Transient database faults are logged and retried on the next pass.
        """
        try:
            while not stop.is_set():
                try:
                    started = self.run_once()
                except Exception as exc:
                    if classify(exc) != "transient":
                        raise
                    logger.warning("notifier pass failed (%s); retrying", exc)
                    stop.wait(poll_interval_s)
                    continue
                if started:
                    continue
                if self._in_flight:
                    # Wake when a delivery finishes (room for more) or at the next poll.
                    wait(list(self._in_flight), timeout=poll_interval_s, return_when=FIRST_COMPLETED)
                else:
                    stop.wait(poll_interval_s)
        finally:
            self.drain()

    def close(self) -> None:
        """Wait for the deliveries in flight and stop the thread pool."""
        self._pool.shutdown(wait=True)

"""The Kafka channel: each delivery as one JSON message on the subscription's topic.

The producer is passed in (``finpulse.services.notifier`` builds it), so this stage never
imports ``ingest``. Messages are keyed by ticker and carry ``X-Finpulse-Delivery`` as a
header; a send counts as delivered once the broker acknowledged it (flush).
"""

from __future__ import annotations

import json
import threading
from typing import Protocol

from finpulse.errors import AlertDeliveryError, FinpulseError
from finpulse.storage.outbox import Delivery
from monitor.notifiers.base import DELIVERY_HEADER


class Producer(Protocol):
    """What the channel needs of a producer (``ingest.producer.PostProducer`` fits)."""

    def publish_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None: ...

    def flush(self, timeout: float | None = None) -> None: ...


class KafkaChannel:
    """Publishes deliveries to Kafka through one shared producer.

    Args:
        producer: publishes and flushes.
        timeout_s: how long to wait for the broker's acknowledgement.
    """

    def __init__(self, producer: Producer, timeout_s: float = 10.0) -> None:
        self._producer = producer
        self._timeout_s = timeout_s
        # publish + flush must pair up: another thread's failure must not be taken for ours.
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> None:
        body = json.dumps(delivery.body(), separators=(",", ":")).encode("utf-8")
        key = delivery.payload["alert"]["ticker"].encode("utf-8")
        with self._lock:
            try:
                self._producer.publish_raw(
                    delivery.target, body, key=key,
                    headers=[(DELIVERY_HEADER, delivery.id.encode("ascii"))],
                )
                self._producer.flush(timeout=self._timeout_s)
            except FinpulseError as exc:
                raise AlertDeliveryError(f"kafka: {exc}") from exc

    def close(self) -> None:
        """The producer belongs to the caller, who closes it."""

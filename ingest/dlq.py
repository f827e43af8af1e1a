"""The dead-letter topic: messages that cannot become stored posts, with the reason why.

Each dead letter keeps the original bytes as its value (the first ``MAX_VALUE_BYTES`` of
an oversized one, with ``truncated``/``original_bytes`` headers, so that it fits in a
broker's usual 1 MiB message limit) and says in headers why it failed and where it came
from. A producer that failed (e.g. after a broker restart that forgot its producer id) is
replaced before the next attempt, so the DLQ recovers as soon as the broker does.
"""

from __future__ import annotations

import logging
from typing import Any

from finpulse.errors import IngestError, MalformedMessage
from finpulse.settings import KafkaSettings
from ingest.producer import PostProducer

logger = logging.getLogger(__name__)

MAX_VALUE_BYTES = 64 * 1024


def dlq_headers(error: MalformedMessage, timestamp_ms: int | None = None) -> list[tuple[str, bytes]]:
    """The headers of a dead-letter message: why it failed and where it came from."""
    headers = [
        ("reason", error.reason.encode("utf-8")),
        ("detail", error.detail.encode("utf-8", "backslashreplace")),
        ("source_topic", (error.topic or "").encode("utf-8")),
        ("source_partition", str(error.partition).encode("ascii")),
        ("source_offset", str(error.offset).encode("ascii")),
    ]
    if timestamp_ms is not None:
        headers.append(("source_timestamp_ms", str(timestamp_ms).encode("ascii")))
    return headers


class DeadLetters:
    """Publishes dead letters to ``kafka.dlq_topic``; ``flush`` makes them durable.

    Args:
        kafka: the broker and the DLQ topic.

    Raises:
        IngestError: the broker cannot be reached.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self._producer: PostProducer | None = PostProducer(kafka)

    def publish(
        self,
        error: MalformedMessage,
        value: bytes | None,
        *,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue one dead letter; ``error`` carries the reason and the source position.

        Raises:
            IngestError: the producer refused it (call ``publish`` again: a new producer
                is made for the next attempt).
        """
        headers = dlq_headers(error, timestamp_ms)
        if value is not None and len(value) > MAX_VALUE_BYTES:
            headers += [("truncated", b"true"), ("original_bytes", str(len(value)).encode("ascii"))]
            value = value[:MAX_VALUE_BYTES]
        try:
            self._current().publish_raw(self.kafka.dlq_topic, value, key=key, headers=headers)
        except IngestError:
            self._discard()
            raise

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until every dead letter queued so far is on the broker.

        Raises:
            IngestError: some did not make it; publish them again.
        """
        if self._producer is None:
            return
        try:
            self._producer.flush(timeout=timeout)
        except IngestError:
            self._discard()
            raise

    def _current(self) -> PostProducer:
        if self._producer is None:
            self._producer = PostProducer(self.kafka)
        return self._producer

    def _discard(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception as exc:  # closing a broken producer must not hide the real fault
                logger.debug("closing a failed DLQ producer: %s", exc)

    def close(self) -> None:
        """Flush what is pending (briefly) and close the producer. Safe to call twice."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()


def position(error: MalformedMessage, record: Any) -> MalformedMessage:
    """Stamp ``error`` with the topic, partition and offset of ``record``; returns it."""
    error.topic, error.partition, error.offset = record.topic, record.partition, record.offset
    return error

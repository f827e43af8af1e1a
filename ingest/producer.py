"""Publishes posts, scored posts and raw bytes onto finpulse's topics.

Posts are keyed by their first ticker, so one company's posts share a partition and
stay in order; posts without a ticker are keyed by id (spread evenly). Publishing is
asynchronous; ``flush`` waits until the broker has every message (``acks="all"``).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from finpulse.errors import IngestError
from finpulse.schemas import Post, ScoredPost
from finpulse.settings import KafkaSettings
from ingest.client import client_config

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


def post_key(post: Post) -> bytes:
    """The partition key of a post: its first ticker, or its id when it has none."""
    return (post.tickers[0] if post.tickers else post.id).encode("utf-8")


def topic_for(kafka: KafkaSettings, post: Post) -> str:
    """The raw topic of a post: ``news_topic`` for ``source == "news"``, else ``social_topic``."""
    return kafka.news_topic if post.source == "news" else kafka.social_topic


class PostProducer:
    """A Kafka producer for finpulse records; a context manager.

    Args:
        kafka: the broker and topic names.
        **overrides: extra ``KafkaProducer`` options (e.g. ``linger_ms``).

    Raises:
        ConfigError: no broker is configured.
        IngestError: the broker cannot be reached.
    """

    def __init__(self, kafka: KafkaSettings, **overrides: Any) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.kafka = kafka
        options: dict[str, Any] = {
            **client_config(kafka),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            "retries": 5,
        }
        options.update(overrides)
        try:
            self._producer = KafkaProducer(**options)
        except KafkaError as exc:
            raise IngestError(f"cannot reach the broker at {kafka.bootstrap_servers}: {exc}") from exc
        # Futures of messages published since the last flush, checked there.
        self._pending: list[Any] = []

    def publish_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Publish bytes as they are (malformed input in tests, the DLQ).

        Args:
            topic: the destination topic.
            value: the message value.
            key: the partition key, if any.
            headers: Kafka headers, ``(name, bytes)`` pairs.

        Raises:
            IngestError: the producer refused the message (e.g. too large, closed).
        """
        from kafka.errors import KafkaError

        try:
            future = self._producer.send(topic, value=value, key=key, headers=headers or None)
        except (KafkaError, AssertionError) as exc:
            raise IngestError(f"cannot publish to {topic}: {exc}") from exc
        self._pending.append(future)
        if len(self._pending) >= 10000:
            # Long runs between flushes: keep only what has not succeeded yet.
            self._pending = [f for f in self._pending if not (f.is_done and f.succeeded())]

    def publish_post(self, post: Post) -> None:
        """Publish a post as JSON on its raw topic, keyed by its first ticker.

        Raises:
            IngestError: the producer refused the message.
        """
        self.publish_raw(
            topic_for(self.kafka, post), post.model_dump_json().encode("utf-8"), key=post_key(post)
        )

    def publish_scored(self, post: ScoredPost) -> None:
        """Publish a scored post as JSON on ``scored_topic``, keyed like its raw post.

        Raises:
            IngestError: the producer refused the message.
        """
        self.publish_raw(
            self.kafka.scored_topic, post.model_dump_json().encode("utf-8"), key=post_key(post)
        )

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every message published so far is acknowledged by the broker.

        Args:
            timeout: seconds to wait at most; ``None`` waits as long as delivery may take.

        Raises:
            IngestError: the timeout passed, or some message since the last flush failed.
        """
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise IngestError(f"flush did not complete: {exc}") from exc
        pending, self._pending = self._pending, []
        failures = [f.exception for f in pending if f.is_done and f.failed()]
        if failures:
            logger.error("%d message(s) failed to publish: %s", len(failures), failures[0])
            raise IngestError(f"{len(failures)} message(s) failed to publish: {failures[0]}")

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush what is pending (up to ``timeout`` seconds) and close the connection."""
        self._producer.close(timeout=timeout)

    def __enter__(self) -> PostProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

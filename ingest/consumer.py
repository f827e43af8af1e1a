"""Micro-batches of posts from the raw topics, with manual, explicit commits.

At-least-once: ``poll_batch`` never commits. The caller makes the batch durable, then
``commit(batch)`` commits exactly the offsets after it. A message that cannot become a
``Post`` is published to the dead-letter topic (value: the original bytes; headers: the
reason, detail and source position) and the DLQ publish is flushed before
``poll_batch`` returns, so committing the batch never loses a bad message either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from finpulse.errors import IngestError, MalformedMessage
from finpulse.schemas import Post
from finpulse.settings import KafkaSettings
from ingest.client import client_config
from ingest.decoding import decode_post
from ingest.entities import TickerExtractor
from ingest.producer import PostProducer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumedPost:
    """A valid post and where it came from.

    ``timestamp_ms`` is the Kafka message timestamp (publish time, ms since the epoch),
    the start of the end-to-end latency.
    """

    post: Post
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True)
class PolledBatch:
    """What one ``poll_batch`` call returned.

    Attributes:
        posts: the valid posts, in partition order.
        invalid: the malformed messages (already on the DLQ), with their positions.
        offsets: for every partition in the batch, the next offset to commit, covering
            valid and invalid messages alike (``TopicPartition -> OffsetAndMetadata``).
        start_offsets: for every partition, the offset of the batch's first message
            (what ``PostConsumer.rewind`` seeks back to).
    """

    posts: list[ConsumedPost] = field(default_factory=list)
    invalid: list[MalformedMessage] = field(default_factory=list)
    offsets: dict[Any, Any] = field(default_factory=dict)
    start_offsets: dict[Any, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.posts) + len(self.invalid)

    @property
    def empty(self) -> bool:
        return not self.offsets


def dlq_headers(error: MalformedMessage, timestamp_ms: int | None = None) -> list[tuple[str, bytes]]:
    """The headers of a dead-letter message: why it failed and where it came from."""
    headers = [
        ("reason", error.reason.encode("utf-8")),
        ("detail", error.detail.encode("utf-8")),
        ("source_topic", (error.topic or "").encode("utf-8")),
        ("source_partition", str(error.partition).encode("ascii")),
        ("source_offset", str(error.offset).encode("ascii")),
    ]
    if timestamp_ms is not None:
        headers.append(("source_timestamp_ms", str(timestamp_ms).encode("ascii")))
    return headers


class PostConsumer:
    """Consumes the raw topics in a consumer group, in batches, without auto-commit.

    Args:
        kafka: broker, topics and ``group_id``.
        max_text_chars: the longest post text accepted (longer ones go to the DLQ).
        extractor: fills in tickers of posts that have none; ``None``: the bundled one.
        topics: topics to subscribe to; default ``kafka.raw_topics``.

    Raises:
        ConfigError: no broker is configured.
        IngestError: the broker cannot be reached.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        max_text_chars: int,
        extractor: TickerExtractor | None = None,
        topics: Sequence[str] | None = None,
    ) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        self.kafka = kafka
        self.max_text_chars = max_text_chars
        self.extractor = extractor if extractor is not None else TickerExtractor.default()
        self.topics = tuple(topics) if topics is not None else kafka.raw_topics
        try:
            self._consumer = KafkaConsumer(
                **client_config(kafka),
                group_id=kafka.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=kafka.session_timeout_ms,
                heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            )
            self._consumer.subscribe(list(self.topics))
        except KafkaError as exc:
            raise IngestError(f"cannot reach the broker at {kafka.bootstrap_servers}: {exc}") from exc
        try:
            self._dlq = PostProducer(kafka)
        except BaseException:
            self._consumer.close(autocommit=False)
            raise
        self._closed = False

    def assignment(self) -> set[Any]:
        """The partitions currently assigned to this consumer (``TopicPartition`` set)."""
        return set(self._consumer.assignment())

    def lag(self) -> int | None:
        """Messages behind the newest offsets, summed over the assigned partitions.

        Uses the high-water marks of the latest fetches, so it costs no request; ``None``
        until a fetch has reported one.
        """
        total, known = 0, False
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            known = True
            total += max(high - self._consumer.position(tp), 0)
        return total if known else None

    def poll_batch(self, max_records: int, max_wait_ms: int) -> PolledBatch:
        """Collect up to ``max_records`` messages, waiting at most ``max_wait_ms``.

        Returns as soon as ``max_records`` messages are in hand or ``max_wait_ms`` has
        passed since the call began (an empty batch when nothing arrived). Malformed
        messages are on the DLQ, flushed, when this returns.

        Args:
            max_records: the batch size limit (valid and invalid messages together).
            max_wait_ms: how long to wait for the batch to fill.

        Returns:
            The batch; nothing is committed.

        Raises:
            IngestError: polling or the DLQ publish failed; the consumer is rewound to
                the start of the batch, so nothing is skipped.
        """
        from kafka import TopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        if self._closed:
            raise IngestError("cannot poll: the consumer is closed")
        deadline = time.monotonic() + max_wait_ms / 1000.0
        records: list[Any] = []
        try:
            while len(records) < max_records:
                remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
                polled = self._consumer.poll(
                    timeout_ms=remaining_ms, max_records=max_records - len(records)
                )
                for partition_records in polled.values():
                    records.extend(partition_records)
                if remaining_ms == 0:
                    break
        except KafkaError as exc:
            self._rewind_records(records)
            raise IngestError(f"polling {', '.join(self.topics)} failed: {exc}") from exc

        posts: list[ConsumedPost] = []
        invalid: list[MalformedMessage] = []
        offsets: dict[Any, Any] = {}
        starts: dict[Any, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            starts.setdefault(tp, record.offset)
            offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
            try:
                post = decode_post(
                    record.value, max_text_chars=self.max_text_chars, extractor=self.extractor
                )
            except MalformedMessage as exc:
                exc.topic, exc.partition, exc.offset = record.topic, record.partition, record.offset
                invalid.append(exc)
                logger.warning(
                    "malformed message %s[%d]@%d -> %s: %s: %s",
                    record.topic, record.partition, record.offset,
                    self.kafka.dlq_topic, exc.reason, exc.detail,
                )  # fmt: skip
                try:
                    self._dlq.publish_raw(
                        self.kafka.dlq_topic,
                        record.value,
                        key=record.key,
                        headers=dlq_headers(exc, record.timestamp),
                    )
                except IngestError:
                    self._rewind(starts)
                    raise
                continue
            posts.append(
                ConsumedPost(post, record.topic, record.partition, record.offset, record.timestamp)
            )
        if invalid:
            try:
                self._dlq.flush()
            except IngestError:
                self._rewind(starts)
                raise
        return PolledBatch(posts=posts, invalid=invalid, offsets=offsets, start_offsets=starts)

    def _rewind_records(self, records: list[Any]) -> None:
        from kafka import TopicPartition

        starts: dict[Any, int] = {}
        for record in records:
            starts.setdefault(TopicPartition(record.topic, record.partition), record.offset)
        self._rewind(starts)

    def _rewind(self, starts: dict[Any, int]) -> None:
        assigned = self._consumer.assignment()
        for tp, offset in starts.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def rewind(self, batch: PolledBatch) -> None:
        """Seek back to the start of ``batch``, so it is polled again (after a failed write).

        Partitions no longer assigned are skipped: their new owner resumes from the
        last committed offset anyway.
        """
        self._rewind(batch.start_offsets)

    def commit(self, batch: PolledBatch) -> None:
        """Commit, synchronously, the offsets just after ``batch``.

        Call it only once the batch's results are durable.

        Args:
            batch: a batch returned by ``poll_batch`` on this consumer.

        Raises:
            IngestError: the commit failed (e.g. ``CommitFailedError`` after a rebalance
                moved the partitions elsewhere); the batch will be delivered again.
        """
        from kafka.errors import KafkaError

        if not batch.offsets:
            return
        if self._closed:
            raise IngestError("cannot commit: the consumer is closed")
        try:
            self._consumer.commit(offsets=dict(batch.offsets))
        except KafkaError as exc:
            raise IngestError(f"commit of {len(batch)} message(s) failed: {exc}") from exc
        logger.debug("committed offsets %s", batch.offsets)

    def close(self) -> None:
        """Leave the group (without committing) and close the connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close(autocommit=False)
        finally:
            self._dlq.close()

    def __enter__(self) -> PostConsumer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

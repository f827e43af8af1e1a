"""Micro-batches of posts from the raw topics, with manual, explicit commits.

At-least-once: ``poll_batch`` never commits. The caller makes the batch durable, then
``commit(batch)`` commits exactly the offsets after it. A message that cannot become a
``Post`` is published to the dead-letter topic (``ingest.dlq``) and the DLQ publish is
flushed before ``poll_batch`` returns, so committing the batch never loses a bad message
either. Anything unexpected while decoding one message is the DLQ reason ``internal``.

While its caller waits out an outage, ``keep_alive`` pauses the partitions and keeps
polling, so the consumer stays in its group (``max_poll_interval_ms`` never expires) and
resumes where it was. A rebalance listener commits the offsets of batches that are durable
but not yet committed before their partitions are revoked.

``stalled`` names the partitions that have messages waiting and have not moved for a while:
a client that silently stops fetching a partition (kafka-python 3.0.12 did, see
``ingest.client``) shows up there instead of only as a lag that never changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any

from finpulse.errors import IngestError, MalformedMessage
from finpulse.schemas import Post
from finpulse.settings import KafkaSettings
from ingest.client import client_config
from ingest.decoding import decode_post
from ingest.dlq import DeadLetters, position
from ingest.entities import TickerExtractor

logger = logging.getLogger(__name__)

# How often ``poll_batch`` checks its ``ready`` callback while no message arrives.
READY_CHECK_MS = 10
# The longest a ``stalled`` check waits for the broker's answer.
STALL_CHECK_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class ConsumedPost:
    """A valid post and where it came from.

    ``timestamp_ms`` is the Kafka message timestamp (publish time, ms since the epoch),
    the start of the end-to-end latency. ``raw`` and ``key`` are the message as received,
    for the DLQ when a later step refuses the post.
    """

    post: Post
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    raw: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)


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


class PostConsumer:
    """Consumes the raw topics in a consumer group, in batches, without auto-commit.

    Args:
        kafka: broker, topics and ``group_id``.
        max_text_chars: the longest post text accepted (longer ones go to the DLQ).
        extractor: fills in tickers of posts that have none; ``None``: the bundled one.
        topics: topics to subscribe to; default ``kafka.raw_topics``.
        max_message_bytes: larger messages go to the DLQ as ``oversized``; ``None``: a
            bound derived from ``max_text_chars``.
        future_tolerance_s: posts dated further ahead of their consume time go to the
            DLQ as ``future_timestamp``; ``None``: no such check.

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
        max_message_bytes: int | None = None,
        future_tolerance_s: float | None = None,
    ) -> None:
        from kafka import AsyncConsumerRebalanceListener, KafkaConsumer
        from kafka.errors import KafkaError

        self.kafka = kafka
        self.max_text_chars = max_text_chars
        self.max_message_bytes = max_message_bytes
        self.future_tolerance = (
            timedelta(seconds=future_tolerance_s) if future_tolerance_s is not None else None
        )
        self.extractor = extractor if extractor is not None else TickerExtractor.default()
        self.topics = tuple(topics) if topics is not None else kafka.raw_topics
        # Offsets of batches whose results are durable but not yet committed.
        self._durable: dict[Any, Any] = {}
        # For ``stalled``: each partition's position when last seen and since when.
        self._progress: dict[Any, tuple[int, float]] = {}
        self._reported: set[Any] = set()
        consumer = self

        class _CommitBeforeRevoke(AsyncConsumerRebalanceListener):  # type: ignore[misc]
            # kafka-python 3 runs listeners on its IO loop: a blocking commit there would
            # deadlock, so the commit is awaited.
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await consumer._commit_durable(set(revoked))

            async def on_partitions_assigned(self, assigned: Any) -> None:
                logger.info("assigned %d partition(s)", len(assigned))

        try:
            self._consumer = KafkaConsumer(
                **client_config(kafka),
                group_id=kafka.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=kafka.session_timeout_ms,
                heartbeat_interval_ms=kafka.heartbeat_interval_ms,
                max_poll_interval_ms=kafka.max_poll_interval_ms,
                max_partition_fetch_bytes=kafka.max_partition_fetch_bytes,
                fetch_max_bytes=kafka.fetch_max_bytes,
                request_timeout_ms=kafka.request_timeout_ms,
            )
            self._consumer.subscribe(list(self.topics), listener=_CommitBeforeRevoke())
        except KafkaError as exc:
            raise IngestError(f"cannot reach the broker at {kafka.bootstrap_servers}: {exc}") from exc
        try:
            self._dlq = DeadLetters(kafka)
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

    def stalled(self, after_s: float, *, now: float | None = None) -> set[Any]:
        """The assigned partitions with messages waiting whose position has not moved for
        ``after_s`` seconds (``TopicPartition`` set).

        Asks the broker for the partitions' end offsets (one request), so a partition
        that is no longer fetched at all is seen too, as is one left paused. A partition's
        clock starts when it is first seen and restarts whenever its position moves, it has
        nothing waiting, or its fetched records wait in the client behind another
        partition's (a backlog); ``keep_alive`` restarts every clock (a wait with the
        partitions paused is not a stall). Call it from the polling thread, between
        batches; the first call only starts the clocks. Each partition is logged once when
        it stalls and once when it moves again.

        Raises:
            IngestError: the broker did not answer; nothing is concluded.
        """
        from kafka.errors import KafkaError

        now = time.monotonic() if now is None else now
        # Paused partitions count too: only ``keep_alive`` pauses, and it resumes them all.
        assigned = set(self._consumer.assignment())
        for tp in set(self._progress) - assigned:
            del self._progress[tp]
        if not assigned:
            return set()
        try:
            # Bounded: a check must not hold the scorer's loop for a whole request timeout.
            timeout_ms = min(self.kafka.request_timeout_ms, STALL_CHECK_TIMEOUT_MS)
            listed = self._consumer.end_offsets(list(assigned), timeout_ms=timeout_ms)
            positions = {tp: self._consumer.position(tp, timeout_ms=timeout_ms) for tp in assigned}
        except KafkaError as exc:
            raise IngestError(f"cannot read the end offsets of {len(assigned)} partition(s): {exc}") from exc
        # The broker's end offset, or the high-water mark of the last fetch when that is
        # further on (Tansu answers ListOffsets with less than the end for a partition
        # written in multi-record batches).
        ends = {tp: max((offset for offset in (listed.get(tp), self._consumer.highwater(tp))
                         if offset is not None), default=None)
                for tp in assigned}
        buffered = self._buffered()
        stalled = set()
        for tp in assigned:
            position, end = positions.get(tp), ends[tp]
            seen = self._progress.get(tp)
            if (position is None or end is None or position >= end or tp in buffered
                    or seen is None or seen[0] != position):
                self._progress[tp] = (position if position is not None else -1, now)
            elif now - seen[1] >= after_s:
                stalled.add(tp)
        for tp in stalled - self._reported:
            logger.warning("stalled partition %s[%d]: at offset %d for %.0f s with %d message(s) "
                           "waiting (end offset %d)", tp.topic, tp.partition, positions[tp],
                           now - self._progress[tp][1], ends[tp] - positions[tp], ends[tp])
        for tp in self._reported - stalled:
            if tp in assigned:
                logger.info("partition %s[%d] moves again", tp.topic, tp.partition)
        self._reported = stalled
        return stalled

    def _buffered(self) -> set[Any]:
        """Partitions whose fetched records wait in the client for their turn.

        With a backlog the client hands out one partition's fetch (up to
        ``max_partition_fetch_bytes``) at a time, so the others' positions do not move for
        a while: that is a queue, not a stall. kafka-python has no public view of it; a
        version without these attributes gives an empty set (no such exemption).
        """
        fetcher = getattr(self._consumer, "_fetcher", None)
        completed = getattr(fetcher, "_completed_fetches", None)
        if completed is None:
            return set()
        buffered = {fetch.topic_partition for fetch in completed.copy()}
        current = getattr(fetcher, "_next_partition_records", None)
        if current:
            buffered.add(current.topic_partition)
        return buffered

    def poll_batch(
        self, max_records: int, max_wait_ms: int, *, ready: Callable[[], bool] | None = None
    ) -> PolledBatch:
        """Collect up to ``max_records`` messages, waiting at most ``max_wait_ms``.

        Returns as soon as ``max_records`` messages are in hand, ``max_wait_ms`` has
        passed since the call began, or ``ready()`` is true (an empty batch when nothing
        arrived). Malformed messages are on the DLQ, flushed, when this returns.

        Args:
            max_records: the batch size limit (valid and invalid messages together).
            max_wait_ms: how long to wait for the batch to fill.
            ready: checked between fetches (at least every ``READY_CHECK_MS``): once it
                returns True, stop waiting and return what is in hand (a pipelined
                caller whose previous batch is ready to be stored).

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
                wait_ms = remaining_ms if ready is None else min(remaining_ms, READY_CHECK_MS)
                polled = self._consumer.poll(
                    timeout_ms=wait_ms, max_records=max_records - len(records)
                )
                for partition_records in polled.values():
                    records.extend(partition_records)
                if remaining_ms == 0 or (ready is not None and ready()):
                    break
        except KafkaError as exc:
            self._rewind_records(records)
            raise IngestError(f"polling {', '.join(self.topics)} failed: {exc}") from exc

        posts: list[ConsumedPost] = []
        invalid: list[MalformedMessage] = []
        offsets: dict[Any, Any] = {}
        starts: dict[Any, int] = {}
        now = datetime.now(timezone.utc) if self.future_tolerance is not None else None
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            starts.setdefault(tp, record.offset)
            offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
            try:
                post = self._decode(record.value, now)
            except MalformedMessage as exc:
                invalid.append(position(exc, record))
                logger.warning(
                    "malformed message %s[%d]@%d -> %s: %s: %s",
                    record.topic, record.partition, record.offset,
                    self.kafka.dlq_topic, exc.reason, exc.detail,
                )  # fmt: skip
                try:
                    self._dlq.publish(exc, record.value, key=record.key, timestamp_ms=record.timestamp)
                except IngestError:
                    self._rewind(starts)
                    raise
                continue
            posts.append(ConsumedPost(post, record.topic, record.partition, record.offset,
                                      record.timestamp, raw=record.value, key=record.key))
        if invalid:
            try:
                self._dlq.flush()
            except IngestError:
                self._rewind(starts)
                raise
        return PolledBatch(posts=posts, invalid=invalid, offsets=offsets, start_offsets=starts)

    def _decode(self, value: bytes | None, now: datetime | None) -> Post:
        """Decode one message; anything unexpected becomes the DLQ reason ``internal``."""
        try:
            return decode_post(
                value,
                max_text_chars=self.max_text_chars,
                extractor=self.extractor,
                max_message_bytes=self.max_message_bytes,
                now=now,
                future_tolerance=self.future_tolerance or timedelta(0),
            )
        except MalformedMessage:
            raise
        except Exception as exc:  # no single message may stop the stream
            logger.exception("unexpected error decoding a message")
            raise MalformedMessage.internal(exc) from exc

    def dead_letter(self, refused: Sequence[tuple[ConsumedPost, MalformedMessage]]) -> None:
        """Publish posts that a later step refused to the DLQ, and flush.

        Args:
            refused: each post with the error saying why (its position is filled in).

        Raises:
            IngestError: the publish or the flush failed; call again (the DLQ may then
                hold a letter twice, never none).
        """
        for consumed, error in refused:
            error.topic, error.partition, error.offset = (
                consumed.topic, consumed.partition, consumed.offset
            )
            logger.warning(
                "refused message %s[%d]@%d -> %s: %s: %s",
                consumed.topic, consumed.partition, consumed.offset,
                self.kafka.dlq_topic, error.reason, error.detail,
            )  # fmt: skip
            raw = consumed.raw if consumed.raw is not None else consumed.post.model_dump_json().encode()
            self._dlq.publish(error, raw, key=consumed.key, timestamp_ms=consumed.timestamp_ms)
        if refused:
            self._dlq.flush()

    def keep_alive(self, seconds: float) -> None:
        """Wait ``seconds`` while staying in the consumer group, consuming nothing.

        The assigned partitions are paused and ``poll`` keeps running (heartbeats,
        ``max_poll_interval_ms``, rebalances); a record that still arrives (a partition
        assigned meanwhile) is sought back, so nothing is skipped.
        """
        from kafka.errors import KafkaError

        deadline = time.monotonic() + max(seconds, 0.0)
        try:
            while True:
                assigned = self._consumer.assignment()
                if assigned:
                    self._consumer.pause(*assigned)
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                if remaining_ms <= 0:
                    break
                polled = self._consumer.poll(timeout_ms=min(remaining_ms, 500))
                records = [r for batch in polled.values() for r in batch]
                if records:
                    self._rewind_records(records)
        except KafkaError as exc:
            logger.warning("polling while paused: %s", exc)
            time.sleep(max(deadline - time.monotonic(), 0.0))
        finally:
            paused = self._consumer.paused()
            if paused:
                self._consumer.resume(*paused)
            self._progress.clear()  # the wait was not a stall: every clock starts again
            self._reported.clear()

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

    def mark_durable(self, batch: PolledBatch) -> None:
        """Record that ``batch``'s results are durable: a rebalance commits it before revoking."""
        self._durable.update(batch.offsets)

    async def _commit_durable(self, revoked: set[Any]) -> None:
        offsets = {tp: om for tp, om in self._durable.items() if tp in revoked}
        for tp in revoked:
            self._durable.pop(tp, None)
        if not offsets:
            return
        try:
            # The awaitable form of KafkaConsumer.commit (kafka-python 3 has no public one).
            coordinator = self._consumer._coordinator
            await coordinator._commit_offsets_sync_async(offsets, self.kafka.request_timeout_ms)
            logger.info("committed %d durable partition offset(s) before revocation", len(offsets))
        except Exception as exc:  # the new owner redelivers them; the database ignores repeats
            logger.warning("commit before revocation failed (%s); the batch comes again", exc)

    def commit(self, batch: PolledBatch) -> None:
        """Commit, synchronously, the offsets just after ``batch``.

        Call it only once the batch's results are durable. Partitions no longer assigned
        are skipped: their new owner has the batch delivered again.

        Args:
            batch: a batch returned by ``poll_batch`` on this consumer.

        Raises:
            IngestError: the commit failed; ``transient`` is True when the broker was
                unreachable or timed out (retry), False when a rebalance moved the
                partitions elsewhere (the batch will be delivered again to their new owner).
        """
        from kafka.errors import CommitFailedError, KafkaError

        if not batch.offsets:
            return
        if self._closed:
            raise IngestError("cannot commit: the consumer is closed", transient=False)
        assigned = self._consumer.assignment()
        offsets = {tp: om for tp, om in batch.offsets.items() if tp in assigned}
        try:
            if offsets:
                self._consumer.commit(offsets=offsets, timeout_ms=self.kafka.request_timeout_ms)
        except CommitFailedError as exc:
            raise IngestError(f"commit of {len(batch)} message(s) refused: {exc}",
                              transient=False) from exc
        except KafkaError as exc:
            raise IngestError(f"commit of {len(batch)} message(s) failed: {exc}") from exc
        for tp in batch.offsets:
            if tp in self._durable and self._durable[tp].offset <= batch.offsets[tp].offset:
                del self._durable[tp]
        if len(offsets) < len(batch.offsets):
            logger.warning("%d partition(s) of the batch were revoked before the commit",
                           len(batch.offsets) - len(offsets))
        logger.debug("committed offsets %s", offsets)

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

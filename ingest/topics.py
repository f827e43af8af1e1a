"""Creates finpulse's topics explicitly, with the partition count asked for.

Brokers differ on auto-creation (Tansu creates a missing topic with 4 partitions on the
first metadata request; many Kafka clusters refuse), so finpulse never relies on it.
"""

from __future__ import annotations

import logging

from finpulse.errors import IngestError
from finpulse.settings import KafkaSettings
from ingest.client import client_config

logger = logging.getLogger(__name__)


def ensure_topics(
    kafka: KafkaSettings, partitions: int | None = None, replication_factor: int | None = None
) -> None:
    """Create the raw, scored and dead-letter topics that do not exist yet.

    Idempotent: existing topics are left as they are (their partition count included).

    Args:
        kafka: the Kafka settings naming the broker and the topics.
        partitions: partitions of each new topic (posts are keyed by ticker); default
            ``kafka.topic_partitions``.
        replication_factor: replicas of each new topic (1 for a single broker); default
            ``kafka.topic_replication_factor``.

    Raises:
        ConfigError: no broker is configured.
        IngestError: the broker cannot be reached or refuses to create a topic.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    partitions = kafka.topic_partitions if partitions is None else partitions
    replication_factor = (
        kafka.topic_replication_factor if replication_factor is None else replication_factor
    )
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    wanted = [kafka.news_topic, kafka.social_topic, kafka.scored_topic, kafka.dlq_topic]
    try:
        admin = KafkaAdminClient(**client_config(kafka), request_timeout_ms=15000)
    except KafkaError as exc:
        raise IngestError(f"cannot reach the broker at {kafka.bootstrap_servers}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        missing = [name for name in dict.fromkeys(wanted) if name not in existing]
        for name in missing:
            try:
                admin.create_topics(
                    [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)]
                )
                logger.info("created topic %s (%d partitions)", name, partitions)
            except TopicAlreadyExistsError:
                # Another process created it between list_topics and create_topics.
                logger.debug("topic %s already exists", name)
    except KafkaError as exc:
        raise IngestError(f"cannot create topics on {kafka.bootstrap_servers}: {exc}") from exc
    finally:
        admin.close()

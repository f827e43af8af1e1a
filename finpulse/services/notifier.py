"""The notifier service: channels built from settings around ``monitor.notifiers.Notifier``.

The Kafka channel gets a producer from ``ingest`` here, so the notifier stage itself never
imports another stage. Without a configured broker there is no Kafka channel: deliveries
to Kafka subscriptions are retried and finally marked dead, visibly.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from finpulse.metrics import Metrics
from finpulse.settings import Settings
from finpulse.storage import Storage
from finpulse.storage.outbox import Delivery
from monitor.notifiers.base import Channel
from monitor.notifiers.smtp import EmailChannel
from monitor.notifiers.topic import KafkaChannel
from monitor.notifiers.webhook import SlackChannel, WebhookChannel
from monitor.notifiers.worker import Notifier, NotifierPolicy

logger = logging.getLogger(__name__)


def build_notifier(
    settings: Settings,
    storage: Storage,
    metrics: Metrics | None,
    stack: contextlib.ExitStack,
    *,
    after_send: Callable[[Delivery], None] | None = None,
) -> Notifier:
    """A notifier with every channel the settings allow; closed by ``stack``.

    Raises:
        IngestError: a broker is configured but cannot be reached.
    """
    cfg = settings.notifier
    webhook = WebhookChannel(cfg.timeout_s)
    stack.callback(webhook.close)
    slack = SlackChannel(cfg.timeout_s)
    stack.callback(slack.close)
    channels: dict[str, Channel] = {
        "webhook": webhook,
        "slack": slack,
        "email": EmailChannel(cfg.smtp),
    }
    if settings.kafka.bootstrap_servers:
        from ingest.producer import PostProducer

        # A publish may block at most the delivery time-out (a missing topic, a full
        # buffer), so a send never outlives its claim.
        producer = stack.enter_context(
            PostProducer(settings.kafka, max_block_ms=int(cfg.timeout_s * 1000))
        )
        channels["kafka"] = KafkaChannel(producer, cfg.timeout_s)
    else:
        logger.warning("no broker configured: deliveries to Kafka subscriptions will fail")
    policy = NotifierPolicy(
        workers=cfg.workers,
        max_attempts=cfg.max_attempts,
        backoff_base_s=cfg.backoff_base_s,
        backoff_cap_s=cfg.backoff_cap_s,
        # A claim outlives the slowest send (HTTP, SMTP or Kafka time-out) with room to spare.
        lease=timedelta(seconds=max(cfg.timeout_s, cfg.smtp.timeout_s) * 2 + 5),
    )
    notifier = Notifier(storage, channels, policy, metrics, after_send=after_send)
    stack.callback(notifier.close)
    return notifier

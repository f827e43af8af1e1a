"""Delivery of alert events to subscribers: the channels and the outbox worker.

``channels`` builds the right channel for a subscription (``webhook``, ``slack``,
``smtp`` for e-mail, ``topic`` for the Kafka topic); ``worker.Notifier`` moves events
from the outbox to the channels with retries, and marks what cannot be delivered dead.
"""

"""Connection options shared by every Kafka client finpulse builds."""

from __future__ import annotations

from typing import Any

from finpulse.errors import ConfigError
from finpulse.settings import KafkaSettings


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """Build the kafka-python keyword arguments for the broker and its security.

    Args:
        kafka: the Kafka section of the settings.

    Returns:
        Keyword arguments common to ``KafkaProducer``, ``KafkaConsumer`` and
        ``KafkaAdminClient``.

    Raises:
        ConfigError: no ``bootstrap_servers`` is configured.
    """
    if not kafka.bootstrap_servers:
        raise ConfigError(
            "no Kafka broker configured: set FINPULSE_KAFKA__BOOTSTRAP_SERVERS "
            "(or run `finpulse demo`, which starts an embedded broker)",
            field="kafka.bootstrap_servers",
        )
    config: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()],
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        config["sasl_mechanism"] = kafka.sasl_mechanism
        config["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            config["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return config

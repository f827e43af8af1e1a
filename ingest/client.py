"""Connection options shared by every Kafka client finpulse builds."""

from __future__ import annotations

from typing import Any

from kafka.record import default_records, util

from finpulse.errors import ConfigError
from finpulse.settings import KafkaSettings

try:
    import google_crc32c
except ImportError:  # a bare install of kafka-python's own needs (bench/gpu_run.sh)
    google_crc32c = None


def _crc32c(view: memoryview) -> int:
    # The C extension takes bytes, not a memoryview slice: one copy of a record batch costs
    # microseconds, the pure-Python checksum milliseconds.
    return google_crc32c.value(bytes(view))


def use_native_crc32c() -> bool:
    """Point kafka-python's CRC-32C (record batches, produced and fetched) at C code.

    kafka-python computes the checksum of every record batch in pure Python unless the
    LGPL ``crc32c`` package is installed; that was 3.6% of a scorer's samples when draining
    the broker. ``google-crc32c`` (Apache-2.0) computes the same checksum in C. Batches are
    still checked on fetch (``check_crcs``); only the implementation changes.

    Returns:
        True when the C implementation is in use (``google-crc32c`` built with its
        extension, or kafka-python's own ``crc32c`` import), False for pure Python
        (``google-crc32c``, a dependency, is missing or built without its extension).
    """
    if util.crc32c_c is not None:
        return True
    if google_crc32c is None or google_crc32c.implementation != "c":
        return False
    default_records.calc_crc32c = _crc32c
    return True


NATIVE_CRC32C = use_native_crc32c()


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

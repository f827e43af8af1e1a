"""Connection options shared by every Kafka client finpulse builds, and two kafka-python fixes.

Importing this module (every finpulse client does) points kafka-python's record-batch
checksum at C code and makes its fetcher restore a resumed partition's parked records.
"""

from __future__ import annotations

import functools
from typing import Any

from kafka.consumer import fetcher
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


def restore_parked_fetches() -> bool:
    """Make kafka-python hand back a paused partition's records once it is resumed.

    When a partition is paused while its fetched records are only partly returned,
    kafka-python 3 parks them and returns them after ``resume``, but only while its
    in-line slot is empty (``None``). A slot that has been used holds an exhausted record
    set, never ``None`` again, so once records of any other partition were returned while
    the partition was paused, its parked records are never restored, and the fetcher never
    fetches that partition again: it stalls, silently, until the consumer is rebuilt. The
    scorer pauses its partitions whenever it waits out an outage (``PostConsumer.keep_alive``)
    and a rebalance during that wait is enough. This wrapper empties an exhausted slot
    before each call, which is what the library's own checks elsewhere mean by an empty
    slot (``tests/ingest/test_paused_partitions.py`` reproduces the stall on the real broker).

    Returns:
        True when the wrapper is in place (or already was); False when this kafka-python
        has no such slot (a version with a different fetcher: nothing to fix).
    """
    original = fetcher.Fetcher.fetched_records
    if getattr(original, "_finpulse_restores_parked", False):
        return True
    if "_paused_partition_records" not in original.__code__.co_names:
        return False

    @functools.wraps(original)
    def fetched_records(self: Any, *args: Any, **kwargs: Any) -> Any:
        current = self._next_partition_records
        if current is not None and not current:
            self._next_partition_records = None
        return original(self, *args, **kwargs)

    fetched_records._finpulse_restores_parked = True  # type: ignore[attr-defined]
    fetcher.Fetcher.fetched_records = fetched_records
    return True


RESTORES_PARKED_FETCHES = restore_parked_fetches()


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

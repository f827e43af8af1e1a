"""Record-batch checksums: kafka-python's CRC-32C in C, same values, corruption still caught."""

from __future__ import annotations

import json
import random

from kafka.record import default_records
from kafka.record._crc32c import crc as pure_python_crc32c
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

import ingest.client
from finpulse.settings import KafkaSettings
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from tests.ingest.kafka_io import make_post


def test_kafka_python_checksums_in_c_once_ingest_is_imported() -> None:
    assert ingest.client.NATIVE_CRC32C
    assert default_records.calc_crc32c is ingest.client._crc32c


def test_the_c_checksum_equals_kafka_pythons_own_on_any_bytes() -> None:
    rng = random.Random(7)
    for size in (0, 1, 7, 64, 1000, 65_537):
        data = bytearray(rng.randbytes(size))
        view = memoryview(data)[3:] if size > 3 else memoryview(data)
        assert default_records.calc_crc32c(view) == pure_python_crc32c(view)


def _batch(payloads: list[bytes]) -> bytearray:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for i, payload in enumerate(payloads):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=None, value=payload, headers=[])
    return builder.build()


def test_a_built_batch_validates_and_one_flipped_byte_does_not() -> None:
    buffer = _batch([f"post {i}".encode() for i in range(50)])
    assert DefaultRecordBatch(bytes(buffer)).validate_crc()
    corrupt = bytearray(buffer)
    corrupt[-5] ^= 0x01  # inside the last record's value
    assert not DefaultRecordBatch(bytes(corrupt)).validate_crc()


def test_batches_finpulse_produces_pass_librdkafkas_crc_check(kafka_settings: KafkaSettings) -> None:
    """Another client, checking every batch's CRC, reads what finpulse's producer wrote."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    ensure_topics(kafka_settings, partitions=1)
    with PostProducer(kafka_settings) as producer:
        for i in range(30):
            producer.publish_post(make_post(i))
        producer.flush()
    consumer = Consumer({"bootstrap.servers": kafka_settings.bootstrap_servers,
                         "group.id": "crc-check", "auto.offset.reset": "earliest",
                         "check.crcs": True, "enable.auto.commit": False})
    consumer.assign([TopicPartition(kafka_settings.news_topic, 0, OFFSET_BEGINNING)])
    try:
        values: list[bytes] = []
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is None:
                if len(values) >= 30:
                    break
                continue
            assert message.error() is None, message.error()
            values.append(message.value())
    finally:
        consumer.close()
    assert [json.loads(v)["id"] for v in values] == [f"post-{i}" for i in range(30)]

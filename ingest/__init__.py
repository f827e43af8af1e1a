"""Ingest stage: posts in from Kafka (or a file), validated into ``Post`` records.

- ``broker``: the embedded Kafka-compatible broker (Tansu) for the demo and tests.
- ``topics``: creates the raw, scored and dead-letter topics.
- ``decoding``: raw bytes -> ``Post``, or ``MalformedMessage`` with a reason.
- ``entities``: ticker extraction from cashtags and S&P 500 company names.
- ``consumer``: micro-batches of posts with manual commits; bad input goes to the DLQ.
- ``producer``: publishes posts, raw bytes and scored posts.
- ``replay``: a CSV/JSONL file of posts onto the raw topics.

This package never imports ``models`` or ``monitor``; it speaks ``finpulse.schemas``.
"""

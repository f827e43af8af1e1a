"""The soak's parts timed alone, as they grow: does any of them slow down over a soak's volume?

    PYTHONPATH=$PWD python bench/soak_parts.py broker   [--chunks 12] [--chunk 20000]
    PYTHONPATH=$PWD python bench/soak_parts.py database [--chunks 15] [--chunk 20000]
    PYTHONPATH=$PWD python bench/soak_parts.py dedup    [--chunks 15] [--chunk 10000] [--bound 100000]
    PYTHONPATH=$PWD python bench/soak_parts.py engine   [--minutes 12]

- ``broker``: the embedded Tansu broker, one 3-partition topic; each chunk is produced, then
  consumed by one assigned consumer that follows the log (msgs/s of both, per chunk).
- ``database``: a throwaway database on the PostgreSQL at 127.0.0.1:5432 (dropped at the
  end); ``Storage.save_scored`` in 256-post batches, as the scorer writes (posts/s per chunk).
- ``dedup``: ``NearDuplicateIndex`` fed the bench tweets in a cycle, as the soak publishes
  them (so after 2,000 posts every post has copies), bounded at ``--bound`` (posts/s per chunk).
- ``engine``: the bundled model as the scorer loads it, scoring 256-text calls for
  ``--minutes`` (texts/s and RSS per 30-second window).

Each prints one line per chunk (or window) and, with ``--json``, a JSON list at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import make_posts, throwaway_database  # noqa: E402
from soak import rss_mb  # noqa: E402

from models.bench import read_texts  # noqa: E402

ROWS = list[dict[str, Any]]


def broker(chunks: int, chunk: int) -> ROWS:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    from ingest.broker import EmbeddedBroker

    payload = json.dumps({"id": "x", "text": "Shares rose after strong quarterly results " * 5})
    rows: ROWS = []
    with EmbeddedBroker() as embedded:
        servers = embedded.bootstrap_servers
        admin = KafkaAdminClient(bootstrap_servers=servers)
        admin.create_topics([NewTopic("parts", 3, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=servers, linger_ms=5, batch_size=65536)
        consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None,
                                 enable_auto_commit=False, auto_offset_reset="earliest")
        consumer.assign([TopicPartition("parts", p) for p in range(3)])
        try:
            for n in range(1, chunks + 1):
                started = time.perf_counter()
                for i in range(chunk):
                    producer.send("parts", payload.encode(), key=str(i % 50).encode())
                producer.flush()
                produced = chunk / (time.perf_counter() - started)
                got, started = 0, time.perf_counter()
                while got < chunk:
                    polled = consumer.poll(timeout_ms=1000, max_records=500)
                    got += sum(len(records) for records in polled.values())
                consumed = chunk / (time.perf_counter() - started)
                rows.append(_row(log=n * chunk, produce_per_s=produced, consume_per_s=consumed))
        finally:
            producer.close()
            consumer.close()
    return rows


def database(chunks: int, chunk: int) -> ROWS:
    from finpulse.schemas import ScoredPost
    from finpulse.storage import Storage

    texts = read_texts(None, 10**9)
    now = datetime.now(timezone.utc)
    probabilities = {"negative": 0.1, "neutral": 0.7, "positive": 0.2}
    rows: ROWS = []
    with throwaway_database("finpulse_parts") as url:
        storage = Storage(url)
        try:
            storage.migrate()
            for n in range(1, chunks + 1):
                posts = make_posts([texts[i % len(texts)] for i in range(chunk)], f"parts{n}")
                scored = [ScoredPost(**post.model_dump(), label="neutral", score=0.1,
                                     probabilities=probabilities, confidence=0.7,
                                     model_version="parts", scored_at=now) for post in posts]
                started = time.perf_counter()
                for i in range(0, chunk, 256):
                    storage.save_scored(scored[i:i + 256], progress={("parts", 0): now})
                rows.append(_row(rows=n * chunk,
                                 posts_per_s=chunk / (time.perf_counter() - started)))
        finally:
            storage.dispose()
    return rows


def dedup(chunks: int, chunk: int, bound: int) -> ROWS:
    from ingest.dedup import NearDuplicateIndex

    texts = read_texts(None, 10**9)
    index = NearDuplicateIndex(max_posts=bound)
    start = datetime.now(timezone.utc)
    rows: ROWS = []
    for n in range(chunks):
        started = time.perf_counter()
        for i in range(n * chunk, (n + 1) * chunk):
            index.assign(f"p{i}", texts[i % len(texts)], start + timedelta(milliseconds=i),
                         tickers=(f"T{i % 50}",))
        rows.append(_row(posts=(n + 1) * chunk, indexed=len(index),
                         posts_per_s=chunk / (time.perf_counter() - started)))
    return rows


def engine(minutes: float) -> ROWS:
    from finpulse.services.reloader import load_engine
    from finpulse.settings import Settings

    texts = read_texts(None, 10**9)
    scorer_engine = load_engine(Settings.load(), None)
    rows: ROWS = []
    started = window = time.monotonic()
    done, i = 0, 0
    while time.monotonic() - started < minutes * 60:
        scorer_engine.predict_proba([texts[(i + k) % len(texts)] for k in range(256)])
        i, done = i + 256, done + 256
        now = time.monotonic()
        if now - window >= 30:
            rows.append(_row(t_s=now - started, texts_per_s=done / (now - window),
                             rss_mb=rss_mb(os.getpid())))
            window, done = now, 0
    return rows


def _row(**values: float) -> dict[str, Any]:
    row = {key: round(value, 1) if isinstance(value, float) else value
           for key, value in values.items()}
    print("  ".join(f"{key} {value}" for key, value in row.items()), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["broker", "database", "dedup", "engine"])
    parser.add_argument("--chunks", type=int, default=None, help="chunks to time")
    parser.add_argument("--chunk", type=int, default=None, help="messages, rows or posts a chunk")
    parser.add_argument("--bound", type=int, default=100_000, help="dedup: the index's bound")
    parser.add_argument("--minutes", type=float, default=12.0, help="engine: how long")
    parser.add_argument("--json", action="store_true", help="print a JSON list at the end")
    args = parser.parse_args(argv)
    for name in ("chunks", "chunk", "bound"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    if args.part == "broker":
        rows = broker(args.chunks or 12, args.chunk or 20_000)
    elif args.part == "database":
        rows = database(args.chunks or 15, args.chunk or 20_000)
    elif args.part == "dedup":
        rows = dedup(args.chunks or 15, args.chunk or 10_000, args.bound)
    else:
        rows = engine(args.minutes)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

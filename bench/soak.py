"""Soak: one real ``finpulse scorer`` process at a steady fraction of its capacity; its RSS.

Starts the embedded Tansu broker and a throwaway PostgreSQL database (dropped at the end),
then one ``python -m finpulse scorer`` process (settings from the environment, like the real
service). It measures the scorer's capacity first (``--capacity-n`` posts published at once,
rows stored per second from the last empty sample to the last row), then publishes unique posts
at ``--load`` x capacity for ``--minutes`` and samples, every ``--every`` seconds, the scorer's
resident memory (``VmRSS`` of /proc) and how far the stored rows lag behind the published ones.

It prints the start, peak and end RSS, their growth over the second half of the soak (what a
leak shows as), and the lag. Run from the repository root::

    PYTHONPATH=$PWD python bench/soak.py --minutes 30 --load 0.8 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from finpulse.settings import Settings
from finpulse.storage import Storage
from ingest.broker import EmbeddedBroker
from ingest.producer import PostProducer
from models.bench import read_texts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import ADMIN_URL, fresh_kafka, make_posts  # noqa: E402
from scale_out import drain_rate, scorer_env, start_scorers, stop  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def stored(db: sa.Engine) -> int:
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM scores")).scalar_one()


def paced_publisher(settings: Settings, texts: Sequence[str], rate: float, seconds: float,
                    sent: list[int], stop_event: threading.Event) -> None:
    """Publish unique posts at ``rate`` per second for ``seconds``; ``sent[0]`` counts them."""
    with PostProducer(settings.kafka) as producer:
        started = time.perf_counter()
        i = 0
        while not stop_event.is_set():
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
            due = int(elapsed * rate) + 1
            while i < due:
                post = make_posts([texts[i % len(texts)]], f"soak{i}")[0]
                producer.publish_post(post)
                i += 1
            producer.flush()
            sent[0] = i
            time.sleep(0.05)
        producer.flush()
        sent[0] = i


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--load", type=float, default=0.8, help="fraction of measured capacity")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--capacity-n", type=int, default=3000, help="posts in the capacity run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.load <= 1.5 or args.minutes <= 0 or args.every <= 0:
        parser.error("--load must be in (0, 1.5], --minutes and --every positive")

    base = Settings.load()
    texts = read_texts(None, 10**9)
    name = f"finpulse_soak_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    samples: list[dict[str, float]] = []
    try:
        storage = Storage(url)
        storage.migrate()
        storage.dispose()
        db = sa.create_engine(url)
        with EmbeddedBroker() as broker:
            settings = fresh_kafka(base, broker.bootstrap_servers)
            scorers = start_scorers(1, scorer_env(settings, broker.bootstrap_servers, url), 600)
            pid = scorers[0][0].pid
            try:
                capacity_posts = make_posts([texts[i % len(texts)] for i in range(args.capacity_n)],
                                            "cap")
                with PostProducer(settings.kafka) as producer:
                    for post in capacity_posts:
                        producer.publish_post(post)
                capacity, _ = drain_rate(db, "cap", args.capacity_n, 900)
                rate = capacity * args.load
                base_rows = stored(db)
                sent = [0]
                halt = threading.Event()
                publisher = threading.Thread(target=paced_publisher, args=(
                    settings, texts, rate, args.minutes * 60, sent, halt), daemon=True)
                started = time.monotonic()
                publisher.start()
                while publisher.is_alive():
                    rows = stored(db) - base_rows
                    samples.append({"t_s": round(time.monotonic() - started, 1),
                                    "rss_mb": round(rss_mb(pid), 1),
                                    "published": sent[0], "stored": rows,
                                    "lag": sent[0] - rows})
                    publisher.join(args.every)
                halt.set()
            finally:
                stop(scorers)
        db.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    rss = [s["rss_mb"] for s in samples]
    half = rss[len(rss) // 2:]
    result: dict[str, Any] = {
        "minutes": args.minutes, "load": args.load, "capacity_per_s": round(capacity, 1),
        "rate_per_s": round(rate, 1), "samples": len(samples),
        "published": samples[-1]["published"] if samples else 0,
        "rss_start_mb": rss[0] if rss else None, "rss_peak_mb": max(rss) if rss else None,
        "rss_end_mb": rss[-1] if rss else None,
        "rss_growth_second_half_mb": round(half[-1] - half[0], 1) if half else None,
        "lag_max": max((s["lag"] for s in samples), default=None),
        "lag_end": samples[-1]["lag"] if samples else None,
    }
    trace = os.environ.get("FINPULSE_SOAK_TRACE")
    if trace:
        Path(trace).write_text(json.dumps(samples))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

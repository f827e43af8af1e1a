"""Scale-out benchmark: K ``finpulse scorer`` processes in one consumer group.

Starts the embedded Tansu broker and a throwaway PostgreSQL database (dropped at the end).
For each K in ``--scorers`` (default 1,2), on fresh topics with ``--partitions`` partitions:

1. K real scorer processes (``python -m finpulse scorer``) start and join one group; the run
   waits until every one of them has logged its partition assignment;
2. N posts (keyed by ticker, spread over the partitions) are published;
3. the rate is N stored rows over the time from the first stored row to the last, read from
   the database every 0.1 s (so start-up and the group join are not counted).

The scorers get their settings from the environment like ``finpulse scorer`` (device, dtype,
batch sizes: ``FINPULSE_MODEL__*``, ``FINPULSE_SCORER__*``). Run from the repository root::

    PYTHONPATH=$PWD python bench/scale_out.py --n 4000 --scorers 1,2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from finpulse.settings import Settings
from ingest.broker import EmbeddedBroker
from models.bench import read_texts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import fresh_kafka, make_posts, publish, throwaway_database  # noqa: E402

READY = "assigned"


def _follow(process: subprocess.Popen[str], log: list[str], ready: threading.Event) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        log.append(line)
        if READY in line:
            ready.set()


def start_scorers(k: int, env: dict[str, str], timeout_s: float) -> list[tuple[subprocess.Popen[str], list[str]]]:
    """Start ``k`` scorer processes and wait until each has been assigned partitions."""
    scorers = []
    waits = []
    for _ in range(k):
        process = subprocess.Popen([sys.executable, "-m", "finpulse", "scorer"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log: list[str] = []
        ready = threading.Event()
        threading.Thread(target=_follow, args=(process, log, ready), daemon=True).start()
        scorers.append((process, log))
        waits.append(ready)
    deadline = time.monotonic() + timeout_s
    for (process, log), ready in zip(scorers, waits):
        while not ready.wait(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                stop(scorers)
                raise RuntimeError("a scorer did not join its group:\n" + "".join(log[-20:]))
    # A member that joined last triggers one more rebalance; let it settle.
    time.sleep(float(env.get("FINPULSE_BENCH_SETTLE_S", "3")))
    return scorers


def stop(scorers: Sequence[tuple[subprocess.Popen[str], list[str]]]) -> None:
    for process, _ in scorers:
        if process.poll() is None:
            process.terminate()
    for process, _ in scorers:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def drain_rate(db: sa.Engine, prefix: str, n: int, timeout_s: float) -> tuple[float, int]:
    """Rows/s of ``prefix`` from the last sample with no row to the sample with all ``n``.

    Sampled every 0.1 s, so the window is at most 0.1 s too long (the rate errs low).
    """
    query = sa.text("SELECT count(*) FROM scores WHERE post_id LIKE :p").bindparams(p=f"{prefix}%")
    empty_at = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    count = 0
    with db.connect() as conn:
        while time.monotonic() < deadline:
            count = conn.execute(query).scalar_one()
            conn.rollback()
            now = time.perf_counter()
            if count == 0:
                empty_at = now
            elif count >= n:
                return count / (now - empty_at), count
            time.sleep(0.1)
    return 0.0, count


def scorer_env(settings: Settings, bootstrap: str, url: str) -> dict[str, str]:
    """The environment of a scorer process: this run's database, broker, topics and group."""
    env = dict(os.environ)
    env.update({
        "FINPULSE_DATABASE_URL": url,
        "FINPULSE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "FINPULSE_KAFKA__NEWS_TOPIC": settings.kafka.news_topic,
        "FINPULSE_KAFKA__SOCIAL_TOPIC": settings.kafka.social_topic,
        "FINPULSE_KAFKA__SCORED_TOPIC": settings.kafka.scored_topic,
        "FINPULSE_KAFKA__DLQ_TOPIC": settings.kafka.dlq_topic,
        "FINPULSE_KAFKA__GROUP_ID": settings.kafka.group_id,
        "FINPULSE_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "FINPULSE_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "FINPULSE_METRICS__PORT": "0",
    })
    return env


def run_one(base: Settings, bootstrap: str, url: str, texts: Sequence[str], k: int,
            partitions: int, timeout_s: float) -> dict[str, Any]:
    kafka = base.kafka.model_copy(update={"topic_partitions": partitions})
    settings = fresh_kafka(base.model_copy(update={"kafka": kafka}), bootstrap)
    tag = f"k{k}-{uuid.uuid4().hex[:6]}-"
    env = scorer_env(settings, bootstrap, url)
    scorers = start_scorers(k, env, timeout_s)
    try:
        publisher = threading.Thread(target=publish, args=(settings, make_posts(texts, tag)))
        publisher.start()
        db = sa.create_engine(url)
        try:
            rate, stored = drain_rate(db, tag, len(texts), timeout_s)
        finally:
            db.dispose()
        publisher.join()
    finally:
        stop(scorers)
    return {"scorers": k, "partitions": partitions, "n": len(texts), "stored": stored,
            "rows_per_s": round(rate, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="posts per run")
    parser.add_argument("--scorers", default="1,2", help="comma-separated process counts")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        counts = [int(part) for part in args.scorers.split(",") if part.strip()]
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--scorers: expected positive integers like 1,2, got {args.scorers!r}")

    base = Settings.load()
    source = read_texts(None, 10**9)
    texts = [source[i % len(source)] for i in range(args.n)]
    results = []
    with throwaway_database("finpulse_scale") as url:
        from finpulse.storage import Storage
        storage = Storage(url)
        storage.migrate()
        storage.dispose()
        with EmbeddedBroker() as broker, tempfile.TemporaryDirectory():
            for k in counts:
                results.append(run_one(base, broker.bootstrap_servers, url, texts, k,
                                       args.partitions, args.timeout))
    one = results[0]["rows_per_s"]
    for row in results:
        row["vs_first"] = round(row["rows_per_s"] / one, 2) if one else None
    if args.json:
        print(json.dumps({"runs": results}))
    else:
        for row in results:
            print(f"{row['scorers']} scorer(s): {row['rows_per_s']:>8} rows/s "
                  f"({row['vs_first']}x), {row['stored']}/{row['n']} stored")
    return 0


if __name__ == "__main__":
    sys.exit(main())

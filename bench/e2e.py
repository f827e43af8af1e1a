"""End-to-end benchmark: broker -> decode -> score -> PostgreSQL -> scored topic.

Starts the embedded Tansu broker, creates a throwaway PostgreSQL database (dropped at the
end), loads the engine the way ``finpulse scorer`` does (``load_engine``, settings from
the environment) and runs the real ``ScorerService``:

1. bare engine: ``engine.predict`` on the N texts in one call, and in micro-batches of
   ``scorer.max_batch_size`` (what the scorer hands the engine);
2. capacity: N posts published beforehand, then the scorer drains them; rate = N / time;
   once with ``scorer.pipeline`` on (the default: the model scores the next batch while
   this one is stored) and once with it off (one batch at a time);
3. latency, per mode: fresh topics, posts published at half that mode's measured capacity
   while the scorer runs; p50/p99 publish-to-stored from
   ``finpulse_pipeline_end_to_end_latency_seconds`` (interpolated within histogram
   buckets, as Prometheus' ``histogram_quantile`` does), and ``latency_p99_le_s``, the
   upper bound of the bucket p99 lies in (what the histogram proves);
4. with ``--host-ceiling``: capacity again (pipelined) with the model replaced by fixed
   probabilities, everything else real: the host side's ceiling for one scorer process
   (``host_ceiling_texts_per_s``, ``host_ms_per_post``), what an accelerator cannot lift.

Steps 1, 2 and 4 run in ``--rounds`` rounds, each measuring every variant (in alternating
order), and each rate is the median over rounds, so a burst of load from other processes hits
all variants alike.

Run from the repository root::

    PYTHONPATH=$PWD python bench/e2e.py --n 4000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from finpulse.metrics import Metrics
from finpulse.schemas import Post
from finpulse.services.scorer import ScorerService, load_engine, model_input
from finpulse.settings import Settings
from finpulse.storage import Storage
from ingest.broker import EmbeddedBroker
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from models.bench import read_texts

# The PostgreSQL server the throwaway databases are made on (bench/gpu_run.sh starts its own).
ADMIN_URL = os.environ.get("FINPULSE_BENCH_ADMIN_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """A new database on the PostgreSQL at ``ADMIN_URL``; yields its URL, drops it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


TICKERS = ("AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "JPM", "XOM", "META")


def make_posts(texts: Sequence[str], tag: str) -> list[Post]:
    """One post per text, unique ids, spread over tickers (partition keys) and sources."""
    now = datetime.now(timezone.utc)
    return [Post(id=f"{tag}-{i}", source="social" if i % 2 else "news", text=text,
                 published_at=now - timedelta(seconds=i % 600),
                 tickers=(TICKERS[i % len(TICKERS)],)) for i, text in enumerate(texts)]


def publish(settings: Settings, posts: Sequence[Post], rate: float | None = None) -> None:
    """Publish posts, paced to ``rate`` posts/s when given (in small bursts)."""
    with PostProducer(settings.kafka) as producer:
        started = time.perf_counter()
        for i, post in enumerate(posts):
            producer.publish_post(post)
            if rate and i % 10 == 9:
                producer.flush()
                ahead = (i + 1) / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()


def fresh_kafka(settings: Settings, bootstrap: str) -> Settings:
    """Settings with unique topics and consumer group on ``bootstrap``, and a short session
    timeout: the group join then takes ~3 s instead of ~23 s (it is not measured, but every
    run waits for it)."""
    tag = uuid.uuid4().hex[:8]
    kafka = settings.kafka.model_copy(update={
        "bootstrap_servers": bootstrap, "news_topic": f"e2e.news.{tag}",
        "social_topic": f"e2e.social.{tag}", "scored_topic": f"e2e.scored.{tag}",
        "dlq_topic": f"e2e.dlq.{tag}", "group_id": f"e2e-{tag}",
        "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000})
    ensure_topics(kafka)
    return settings.model_copy(update={"kafka": kafka})


def _latency_buckets(metrics: Metrics) -> list[tuple[float, float]]:
    """The end-to-end latency histogram's ``(le, cumulative count)`` pairs, ascending."""
    registry = metrics.registry
    assert registry is not None
    name = "finpulse_pipeline_end_to_end_latency_seconds"
    buckets: list[tuple[float, float]] = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
    return sorted(buckets)


def quantile_bound(metrics: Metrics, q: float) -> float:
    """The upper bound of the bucket holding quantile ``q``: at least a share ``q`` of the
    posts were stored within this many seconds (what the histogram proves)."""
    buckets = _latency_buckets(metrics)
    rank = q * buckets[-1][1]
    return next(upper for upper, count in buckets if count >= rank)


def quantile(metrics: Metrics, q: float) -> float:
    """``histogram_quantile(q)`` of the end-to-end latency histogram (seconds)."""
    buckets = _latency_buckets(metrics)
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def run_scorer(settings: Settings, engine: Any, storage: Storage, n: int,
               posts: Sequence[Post] | None = None, rate: float | None = None,
               ) -> tuple[float, Metrics, int]:
    """Run the scorer until ``n`` messages are consumed; publish ``posts`` meanwhile if given.

    With ``posts``, one warm-up post is published first and the paced publisher starts only
    once the scorer has processed it, so the consumer-group join (seconds) does not count as
    latency (its own latency is one sample among thousands; ``n`` counts it).

    Returns the rate (messages/s) from the end of the first batch to the end of the last
    (so the consumer group join is not counted), the metrics, and the rows stored.
    """
    metrics = Metrics(CollectorRegistry())
    marks: list[tuple[float, int]] = []
    service = ScorerService(settings, engine=engine, storage=storage, metrics=metrics)
    publisher = None
    if posts is not None:
        publish(settings, posts[:1])
        posts = posts[1:]
        publisher = threading.Thread(target=publish, args=(settings, posts, rate), daemon=True)

    def on_batch(size: int) -> None:
        marks.append((time.perf_counter(), size))
        if publisher is not None and not publisher.is_alive() and len(marks) == 1:
            publisher.start()

    try:
        stats = service.run(threading.Event(), until_consumed=n, on_batch=on_batch)
    finally:
        service.close()
    if publisher is not None:
        publisher.join()
    if len(marks) < 2:
        return n / stats.elapsed_s, metrics, stats.new_rows
    after_first = sum(size for _, size in marks[1:])
    return after_first / (marks[-1][0] - marks[0][0]), metrics, stats.new_rows


def engine_rates(engine: Any, texts: Sequence[str], batch: int, rounds: int) -> tuple[float, float]:
    """Median texts/s of ``predict`` on all texts at once, and in micro-batches of ``batch``."""
    whole, micro = [], []
    engine.predict(texts[:16])
    for _ in range(rounds):
        started = time.perf_counter()
        engine.predict(texts)
        whole.append(len(texts) / (time.perf_counter() - started))
        started = time.perf_counter()
        for i in range(0, len(texts), batch):
            engine.predict(texts[i:i + batch])
        micro.append(len(texts) / (time.perf_counter() - started))
    return statistics.median(whole), statistics.median(micro)


MODES = {"pipelined": True, "serial": False}


class _NoModel:
    """Stands in for the model: fixed probabilities for every padded batch, no inference.

    A scorer run with it does everything else for real (Kafka fetch and decode, validation,
    near-duplicates, tokenising and padding, PostgreSQL writes, the scored topic, offset
    commits), so its rate is the host side's ceiling for one scorer process: the rate no
    accelerator can lift that process above.
    """

    workers = 1
    int8 = None

    def __init__(self, labels: int) -> None:
        self.row = np.full(labels, 0.2, dtype=np.float32)
        self.row[-1] = 1.0 - self.row[:-1].sum()

    def probabilities(self, ids: Any) -> Any:
        return np.tile(self.row, (len(ids), 1))

    def run_all(self, padded: Any) -> Iterator[Any]:
        for ids, _mask in padded:
            yield self.probabilities(ids)


@contextmanager
def without_model(engine: Any) -> Iterator[None]:
    """Swap the engine's ONNX sessions (or its torch forward passes) for ``_NoModel``."""
    stand_in = _NoModel(len(engine.labels))
    if engine._onnx is not None:
        onnx, engine._onnx = engine._onnx, stand_in
        try:
            yield
        finally:
            engine._onnx = onnx
    else:
        engine._forward_all = stand_in.run_all
        try:
            yield
        finally:
            del engine._forward_all


def with_pipeline(settings: Settings, on: bool) -> Settings:
    scorer = settings.scorer.model_copy(update={"pipeline": on})
    return settings.model_copy(update={"scorer": scorer})


_STARTED = time.perf_counter()


def progress(message: str) -> None:
    """One line on stderr with the seconds since start (a long run shows where it is)."""
    print(f"[{time.perf_counter() - _STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="posts in each capacity run")
    parser.add_argument("--latency-n", type=int, default=0,
                        help="posts in each latency run (default: ~20 s at half capacity)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the engine and capacity runs (median)")
    parser.add_argument("--modes", default="pipelined,serial",
                        help="comma-separated scorer modes to run: pipelined, serial")
    parser.add_argument("--host-ceiling", action="store_true",
                        help="also drain N posts with the model replaced by fixed "
                             "probabilities (pipelined): the host side's ceiling")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"--modes: expected pipelined and/or serial, got {args.modes!r}")
    if args.n < 1 or args.rounds < 1:
        parser.error("--n and --rounds must be at least 1")

    base = Settings.load()
    source = read_texts(None, 10**9)
    texts = [source[i % len(source)] for i in range(args.n)]
    bare: list[float] = []
    micro: list[float] = []
    e2e: dict[str, list[float]] = {mode: [] for mode in modes}
    latency: dict[str, tuple[float, int, Metrics]] = {}
    host: list[float] = []
    stored = 0
    with throwaway_database("finpulse_e2e") as url:
        with EmbeddedBroker() as broker:
            settings = base.model_copy(update={"database_url": url})
            storage = Storage(url)
            storage.migrate()
            engine = load_engine(settings, settings.model.path)
            inputs = [model_input(p) for p in make_posts(texts, "w")]
            engine.predict(inputs[:16])
            for round_ in range(args.rounds):
                whole, small = engine_rates(engine, inputs, settings.scorer.max_batch_size, 1)
                bare.append(whole)
                micro.append(small)
                progress(f"round {round_}: engine {whole:.1f}, micro-batches {small:.1f} texts/s")
                for mode in modes if round_ % 2 == 0 else modes[::-1]:
                    run_settings = fresh_kafka(with_pipeline(settings, MODES[mode]),
                                               broker.bootstrap_servers)
                    publish(run_settings, make_posts(texts, f"cap{round_}{mode}"))
                    rate, _, stored = run_scorer(run_settings, engine, storage, args.n)
                    e2e[mode].append(rate)
                    progress(f"round {round_}: {mode} {rate:.1f} posts/s")
                if args.host_ceiling:
                    run_settings = fresh_kafka(with_pipeline(settings, True),
                                               broker.bootstrap_servers)
                    publish(run_settings, make_posts(texts, f"host{round_}"))
                    with without_model(engine):
                        rate, _, _ = run_scorer(run_settings, engine, storage, args.n)
                    host.append(rate)
                    progress(f"round {round_}: host ceiling {rate:.1f} posts/s")

            for mode in modes:
                half = statistics.median(e2e[mode]) / 2
                latency_n = args.latency_n or max(200, int(half * 20))
                lat_texts = [source[i % len(source)] for i in range(latency_n)]
                run_settings = fresh_kafka(with_pipeline(settings, MODES[mode]),
                                           broker.bootstrap_servers)
                _, metrics, _ = run_scorer(run_settings, engine, storage, latency_n,
                                           posts=make_posts(lat_texts, f"lat{mode}"), rate=half)
                latency[mode] = (half, latency_n, metrics)
                progress(f"latency {mode}: {latency_n} posts at {half:.1f}/s, "
                         f"p99 {quantile(metrics, 0.99):.3f} s")
            storage.dispose()

    engine_rate, micro_rate = statistics.median(bare), statistics.median(micro)
    result: dict[str, Any] = {
        "n": args.n, "rounds": args.rounds, "stored": stored,
        "engine": engine.info["backend"] + "/" + engine.info["dtype"],
        "engine_texts_per_s": round(engine_rate, 1),
        "engine_microbatch_texts_per_s": round(micro_rate, 1),
        "max_batch_size": settings.scorer.max_batch_size,
    }
    for mode in modes:
        prefix = "" if mode == "pipelined" else f"{mode}_"
        rate = statistics.median(e2e[mode])
        half, latency_n, metrics = latency[mode]
        result.update({
            f"{prefix}e2e_texts_per_s": round(rate, 1),
            f"{prefix}e2e_rounds": [round(r, 1) for r in e2e[mode]],
            f"{prefix}e2e_vs_engine": round(rate / engine_rate, 3),
            f"{prefix}e2e_vs_engine_microbatch": round(rate / micro_rate, 3),
            f"{prefix}latency_rate_per_s": round(half, 1), f"{prefix}latency_n": latency_n,
            f"{prefix}latency_p50_s": round(quantile(metrics, 0.50), 3),
            f"{prefix}latency_p99_s": round(quantile(metrics, 0.99), 3),
            f"{prefix}latency_p99_le_s": quantile_bound(metrics, 0.99),
        })
    if host:
        result["host_ceiling_texts_per_s"] = round(statistics.median(host), 1)
        result["host_ceiling_rounds"] = [round(r, 1) for r in host]
        result["host_ms_per_post"] = round(1000 / statistics.median(host), 3)
    if len(modes) == 2:
        result["pipeline_speedup"] = round(
            statistics.median(e2e["pipelined"]) / statistics.median(e2e["serial"]), 3)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<36} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak: one real ``finpulse scorer`` process at a steady fraction of its capacity; its RSS.

Starts the embedded Tansu broker and a throwaway PostgreSQL database (dropped at the end),
then one ``python -m finpulse scorer`` process (settings from the environment, like the real
service). It measures the scorer's capacity first (``--capacity-n`` posts published at once,
rows stored per second from the last empty sample to the last row), then publishes unique posts
at ``--load`` x capacity for ``--minutes`` and samples, every ``--every`` seconds, the scorer's
resident memory (``VmRSS`` of /proc) and how far the stored rows lag behind the published ones.

It prints the start, peak and end RSS, their growth over the second half of the soak (what a
leak shows as), and the lag. ``windows`` splits the soak into 90-second spans (nine samples)
and gives, for each, the rows stored per second, the CPU use (cores, from /proc) of the
scorer, the broker, the publisher, PostgreSQL and the whole machine, posts per batch, and inference and database-write milliseconds per post (from
the scorer's own /metrics histograms): where a falling rate goes. Run from the repository root::

    PYTHONPATH=$PWD python bench/soak.py --minutes 30 --load 0.8 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from finpulse.settings import Settings
from finpulse.storage import Storage
from ingest.broker import EmbeddedBroker, free_port
from ingest.producer import PostProducer
from models.bench import read_texts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import fresh_kafka, make_posts, throwaway_database  # noqa: E402
from scale_out import drain_rate, scorer_env, start_scorers, stop  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds all cores of this machine have spent busy, and stolen by the hypervisor
    (a virtual machine's neighbours), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def postgres_cpu_s() -> float:
    """CPU seconds of every running PostgreSQL process on this machine (backends, autovacuum,
    checkpointer, WAL writer): the database's share of the cores."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "postgres":
                total += cpu_s(int(proc.name))
        except OSError:  # the process ended while we looked
            continue
    return total


def own_cpu_s() -> float:
    """CPU seconds of this process (the publisher and the sampling)."""
    times = os.times()
    return times.user + times.system


#: Scorer histograms whose running sums the soak samples: per-stage time over the soak.
STAGES = {"finpulse_scorer_batch_size_posts": "posts_in_batches",
          "finpulse_scorer_inference_latency_seconds": "inference_s",
          "finpulse_monitor_db_write_latency_seconds": "db_write_s"}


def scrape(port: int) -> dict[str, float]:
    """The scorer's batch count and the running sums of ``STAGES`` from its /metrics."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            stage = STAGES.get(sample.name.removesuffix("_sum").removesuffix("_count"))
            if stage and sample.name.endswith("_sum"):
                values[stage] = values.get(stage, 0.0) + sample.value
            if sample.name == "finpulse_scorer_batch_size_posts_count":
                values["batches"] = values.get("batches", 0.0) + sample.value
    return values


def usage(pid: int, broker_pid: int | None, metrics_port: int) -> dict[str, float]:
    """Running CPU seconds of the scorer (``pid``), the broker, this process, PostgreSQL and
    the machine, and the scorer's stage sums from its /metrics: one soak sample's counters."""
    busy, steal = machine_cpu_s()
    return {"cpu_s": round(cpu_s(pid), 2),
            "broker_cpu_s": round(cpu_s(broker_pid), 2) if broker_pid else 0.0,
            "soak_cpu_s": round(own_cpu_s(), 2),
            "postgres_cpu_s": round(postgres_cpu_s(), 2),
            "machine_busy_s": round(busy, 2), "machine_steal_s": round(steal, 2),
            **{k: round(v, 3) for k, v in scrape(metrics_port).items()}}


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


def windows(samples: list[dict[str, float]], span_s: float) -> list[dict[str, float]]:
    """Per window of ``span_s`` seconds: rows stored per second, the CPU use (cores) of the
    scorer, the broker, this process (the publisher), PostgreSQL's processes and the whole
machine (and what the hypervisor stole from it), posts per batch,
    and inference and database-write milliseconds per post."""
    out = []
    marks = [0]
    for i, sample in enumerate(samples):
        if sample["t_s"] - samples[marks[-1]]["t_s"] >= span_s:
            marks.append(i)
    for a, b in zip(marks, marks[1:]):
        first, last = samples[a], samples[b]
        seconds = last["t_s"] - first["t_s"]

        def delta(key: str) -> float:
            return last.get(key, 0.0) - first.get(key, 0.0)

        posts = delta("posts_in_batches")
        out.append({
            "from_s": first["t_s"], "to_s": last["t_s"],
            "stored_per_s": round(delta("stored") / seconds, 1),
            "cpu_cores": round(delta("cpu_s") / seconds, 2),
            "broker_cores": round(delta("broker_cpu_s") / seconds, 2),
            "soak_cores": round(delta("soak_cpu_s") / seconds, 2),
            "postgres_cores": round(delta("postgres_cpu_s") / seconds, 2),
            "machine_cores": round(delta("machine_busy_s") / seconds, 2),
            "stolen_cores": round(delta("machine_steal_s") / seconds, 2),
            "posts_per_batch": round(posts / delta("batches"), 1) if delta("batches") else None,
            "inference_ms_per_post": round(1000 * delta("inference_s") / posts, 3) if posts else None,
            "db_write_ms_per_post": round(1000 * delta("db_write_s") / posts, 3) if posts else None,
            "lag": last["lag"],
        })
    return out


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
    samples: list[dict[str, float]] = []
    with throwaway_database("finpulse_soak") as url:
        storage = Storage(url)
        storage.migrate()
        storage.dispose()
        db = sa.create_engine(url)
        with EmbeddedBroker() as broker:
            settings = fresh_kafka(base, broker.bootstrap_servers)
            env = scorer_env(settings, broker.bootstrap_servers, url)
            metrics_port = free_port()
            env["FINPULSE_METRICS__PORT"] = str(metrics_port)
            scorers = start_scorers(1, env, 600)
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
                                    "lag": sent[0] - rows,
                                    **usage(pid, broker.pid, metrics_port)})
                    publisher.join(args.every)
                halt.set()
            finally:
                stop(scorers)
        db.dispose()

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
    result["windows"] = windows(samples, args.every * 9)
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

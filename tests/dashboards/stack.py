"""Every finpulse service on one replayed stream, each on its own /metrics, scraped by a real
Prometheus with the production config's job names.

The services run as their commands run them, in threads, each with its own database pool
and metrics registry: the scorer and the monitor (``finpulse scorer`` / ``monitor``), the
notifier (``finpulse notifier``) with one webhook subscription to a real HTTP receiver, the
API (``finpulse api``) on a free port with a reader key, and the retraining job's service.

The stream, in phases with Prometheus scrapes in between (rate() and histogram_quantile()
need a counter to move between two samples):

1. half of a 16-hour calm baseline for AAPL, MSFT and BA, plus malformed messages (dead
   letters, scorer faults); API requests; a retraining run;
2. the rest of the baseline, a burst of bad news about BA and a calm hour after it. Once
   every partition has been idle for a second the watermark passes the burst's windows,
   they close and the alerts fire; the notifier delivers them to the receiver, whose first
   answer is a 500 (so one attempt is ``retried``);
   then two late posts for windows already judged (one within the allowed lateness, one
   beyond it);
3. a second calm hour (the burst hour's successor closes: alerts resolve) and two more late
   posts; API requests and a retraining run again.

The retraining runs are real runs of ``RetrainService`` that fail for a real reason: the
configured gold split does not exist (``DataError``). A run that completes trains and
evaluates two models (minutes on CPU), so ``finpulse_retrain_gold_macro_f1``, which only a
completed run sets, is produced here by no one (tests/services/test_retrain.py checks it).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from finpulse.api import create_app
from finpulse.api.server import ApiServer
from finpulse.errors import DataError
from finpulse.metrics import Metrics, serve
from finpulse.schemas import Post
from finpulse.services.monitor import MonitorService
from finpulse.services.notifier import build_notifier
from finpulse.services.retrain import RetrainService
from finpulse.services.scorer import ModelReloader, ScorerService
from finpulse.settings import KafkaSettings, MonitorSettings, Settings
from finpulse.storage import Storage
from finpulse.storage.keys import create_key
from finpulse.storage.registry import ModelRegistry
from finpulse.storage.subscriptions import create_subscription
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from monitor.rules import RuleSet
from tests.dashboards.prometheus_server import Prometheus
from tests.e2e.posts import MALFORMED, T0, calm_then_burst
from tests.monitor.receivers import Receiver

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("scorer", "monitor", "notifier", "api", "retrain")

# Only a completed retraining run sets it (see the module docstring).
ONLY_A_COMPLETED_RETRAIN: frozenset[str] = frozenset({"finpulse_retrain_gold_macro_f1"})
# Only a transient fault (the database or the broker unreachable, then back) creates its
# series; injecting one costs a private PostgreSQL or broker restart here, and
# tests/e2e/test_faults.py does exactly that. Its panel query ends in ``or vector(0)``.
ONLY_AFTER_A_TRANSIENT_FAULT: frozenset[str] = frozenset({"finpulse_scorer_retries_total"})
# Only a scorer running a shadow model (`finpulse registry shadow VERSION`) sets these; the
# stack runs none (a second model per batch), tests/services/test_shadow.py checks them.
ONLY_WITH_A_SHADOW_MODEL: frozenset[str] = frozenset({
    "finpulse_scorer_shadow_scored_total", "finpulse_scorer_shadow_inference_latency_seconds",
    "finpulse_scorer_shadow_model_info",
})


@dataclass
class Stack:
    prometheus: Prometheus
    database_url: str
    start: float
    end: float
    published: tuple[datetime, datetime]
    webhook_requests: int
    api_statuses: list[int]
    late_events: list[tuple[str, str, str]]  # (event, ticker, window) delivered in phase 3


def total(result: list[dict[str, Any]]) -> float:
    """The sum of an instant query's values (0 without any series)."""
    return sum(float(series["value"][1]) for series in result)


def scrape_jobs(ports: dict[str, int]) -> dict[str, list[str]]:
    """The production scrape config's finpulse jobs, each pointed at this test's service."""
    config = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "prometheus.yaml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"] if job["job_name"].startswith("finpulse-")}
    assert jobs == {f"finpulse-{name}" for name in ports}, "every production job runs here"
    return {f"finpulse-{name}": [f"127.0.0.1:{port}"] for name, port in ports.items()}


def stream() -> tuple[list[Post], list[Post], list[Post], list[Post]]:
    """(first half, second half with the burst and the hour after, the next hour, late posts)."""
    baseline, burst = calm_then_burst(hours=16)
    later = calm_then_burst(hours=19)[0]

    def late(hour: int, minute: int, ticker: str, text: str) -> Post:
        return Post(id=f"late-{ticker}-{hour}-{minute}", source="news", text=text, tickers=(ticker,),
                    published_at=T0 + timedelta(hours=hour, minutes=minute))

    # Within the allowed lateness (6 h) of the watermark, and beyond it; two of each, sent
    # in two rounds, so the counters move while Prometheus watches.
    late_posts = [
        late(14, 50, "AAPL", "Apple declares regular quarterly dividend"),
        late(2, 50, "MSFT", "Microsoft names new chief financial officer"),
        late(15, 50, "AAPL", "Apple schedules earnings call for Thursday"),
        late(3, 50, "MSFT", "Microsoft opens new regional office in Austin"),
    ]

    def with_urls(posts: list[Post]) -> list[Post]:
        return [p.model_copy(update={"url": f"https://news.example.com/{p.id}"}) for p in posts]

    return (
        with_urls(baseline[: len(baseline) // 2]),
        with_urls(baseline[len(baseline) // 2:] + burst + [p for p in later if "-17-" in p.id]),
        with_urls([p for p in later if "-18-" in p.id]),
        with_urls(late_posts),
    )


def call_api(url: str, key: str) -> list[int]:
    """A few requests as a dashboard user would make them, and one without a key."""
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        statuses = [client.get(path, headers=auth).status_code
                    for path in ("/v1/alerts", "/v1/tickers/BA/sentiment", "/v1/posts")]
        statuses.append(client.get("/v1/alerts").status_code)
        statuses.append(client.get("/healthz").status_code)
    assert statuses == [200, 200, 200, 401, 200], statuses
    return statuses


def failed_retrain_run(service: RetrainService) -> None:
    with pytest.raises(DataError, match="missing-gold-split"):
        service.run_once()


@contextlib.contextmanager
def running_stack(broker: str, pg_url: str, workdir: Path) -> Iterator[Stack]:
    """Run every service on the stream above; yields once Prometheus has seen it all."""
    tag = uuid.uuid4().hex[:10]
    kafka = KafkaSettings(bootstrap_servers=broker, news_topic=f"news-{tag}", social_topic=f"social-{tag}",
                          scored_topic=f"scored-{tag}", dlq_topic=f"dlq-{tag}", group_id=f"group-{tag}")
    settings = Settings.load(
        database_url=pg_url, kafka=kafka.model_dump(), metrics={"enabled": False},
        scorer={"max_batch_size": 32, "max_wait_ms": 200},
        notifier={"backoff_base_s": 0.2, "backoff_cap_s": 0.5, "timeout_s": 5},
        retrain={"gold_split": str(workdir / "missing-gold-split.csv"), "warm_start": False,
                 "output_dir": str(workdir / "retrained")},
    )
    ensure_topics(settings.kafka)
    first, second, third, late = stream()
    posts = first + second + third + late
    malformed = list(MALFORMED.values())

    with contextlib.ExitStack() as stack:
        storages = {name: Storage(pg_url) for name in SERVICES}
        for storage in storages.values():
            stack.callback(storage.dispose)
        storages["scorer"].migrate()
        metrics = {name: Metrics(CollectorRegistry()) for name in SERVICES}
        ports = {}
        for name in SERVICES:
            endpoint, ports[name] = serve(metrics[name], "127.0.0.1", 0)
            stack.callback(endpoint.shutdown)

        # As `finpulse scorer` starts: the model comes from (and is recorded in) the registry.
        engine = ModelReloader(settings, ModelRegistry(storages["scorer"])).initial()
        scorer = ScorerService(settings, engine=engine, storage=storages["scorer"], metrics=metrics["scorer"])
        stack.callback(scorer.close)
        monitor = MonitorService(storages["monitor"], RuleSet.load(), metrics["monitor"],
                                 MonitorSettings(idle_partition_s=1))
        receiver = stack.enter_context(Receiver(plan=[500]))
        create_subscription(storages["notifier"], channel="webhook", target=receiver.url,
                            name="dashboards", tickers=["BA"])
        notifier = build_notifier(settings, storages["notifier"], metrics["notifier"], stack)
        api = ApiServer(create_app(storages["api"], settings, metrics["api"]), "127.0.0.1", 0)
        api.start()
        stack.callback(api.stop)
        key = create_key(storages["api"], "reader", "dashboards")[1]
        retrain = RetrainService(settings, storages["retrain"], metrics["retrain"], device="cpu")

        stop = threading.Event()
        threads = [
            threading.Thread(target=scorer.run, args=(stop,), name="scorer", daemon=True),
            threading.Thread(target=monitor.run, args=(stop, 0.5), name="monitor", daemon=True),
            threading.Thread(target=notifier.run, args=(stop, 0.2), name="notifier", daemon=True),
        ]

        def join() -> None:
            stop.set()
            for thread in threads:
                if thread.is_alive():
                    thread.join(timeout=30)

        stack.callback(join)
        jobs = scrape_jobs(ports)
        prom = stack.enter_context(Prometheus(jobs, workdir / "prometheus"))
        start = time.time()
        for thread in threads:
            thread.start()
        prom.wait_for('count(up{job=~"finpulse-.*"} == 1)', lambda r: total(r) == len(jobs))
        statuses = call_api(api.url, key)
        failed_retrain_run(retrain)

        def metric(expr: str, predicate, timeout_s: float = 60.0) -> None:
            prom.wait_for(expr, lambda r: predicate(total(r)), timeout_s=timeout_s)

        with PostProducer(settings.kafka) as producer:
            # Phase 1.
            for post in first:
                producer.publish_post(post)
            for payload in malformed:
                producer.publish_raw(settings.kafka.news_topic, payload)
            producer.flush()
            metric("sum(finpulse_ingest_messages_consumed_total)", lambda v: v >= len(first) + len(malformed))
            # Phase 2: the burst's windows close once the partitions are idle.
            for post in second:
                producer.publish_post(post)
            for payload in malformed:
                producer.publish_raw(settings.kafka.social_topic, payload)
            producer.flush()
            metric("sum(finpulse_scorer_posts_scored_total)", lambda v: v >= len(first) + len(second), 120)
            metric("sum(finpulse_monitor_alerts_fired_total)", lambda v: v >= 1, 90)
            delivered = 'sum(finpulse_notifier_deliveries_total{status="delivered"})'
            metric(delivered, lambda v: v >= 1)
            metric("sum(finpulse_notifier_outbox_pending)", lambda v: v == 0)
            before = total(prom.query(delivered))
            phase_3_from = len(receiver.requests)
            for post in late[:2]:
                producer.publish_post(post)
            producer.flush()
            metric("sum(finpulse_monitor_late_posts_total)", lambda v: v >= 2, 90)
            # Phase 3: the next hour resolves the alerts; two more posts arrive late.
            for post in third + late[2:]:
                producer.publish_post(post)
            producer.flush()
        statuses += call_api(api.url, key)
        failed_retrain_run(retrain)
        metric("sum(finpulse_scorer_posts_scored_total)", lambda v: v >= len(posts), 120)
        metric("sum(finpulse_ingest_messages_invalid_total)", lambda v: v == 2 * len(malformed))
        metric("sum(finpulse_monitor_late_posts_total)", lambda v: v >= len(late), 90)
        metric("sum(finpulse_monitor_alerts_resolved_total)", lambda v: v >= 1, 90)
        # The burst's hour-long alerts resolve only now (their next hour closed): delivered too.
        metric(delivered, lambda v: v > before)
        metric("sum(finpulse_notifier_outbox_pending)", lambda v: v == 0)
        # A few scrapes after the last change: rate() and increase() need two samples.
        settled = time.time()
        prom.wait_for('min(timestamp(up{job=~"finpulse-.*"}))', lambda r: total(r) >= settled + 3)
        end = time.time() + 1
        join()
        yield Stack(
            prometheus=prom, database_url=pg_url, start=start, end=end,
            published=(min(p.published_at for p in posts), max(p.published_at for p in posts)),
            webhook_requests=len(receiver.requests), api_statuses=statuses,
            late_events=[(b["event"], b["alert"]["ticker"], b["alert"]["window"])
                         for b in receiver.bodies[phase_3_from:]],
        )

"""``finpulse demo``: the whole pipeline on embedded defaults, ending with a summary.

Starts the embedded Kafka-compatible broker when no broker is configured, replays the
bundled sample stream (plus a few malformed messages, to show the dead-letter topic),
scores it with the default model, aggregates, evaluates the alert rules, delivers the
burst company's (Uber's) alerts to a webhook subscriber (a real HTTP receiver in a thread)
through the notifier, serves the history API while it runs, and prints what happened and
where to look.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from finpulse.api import create_app
from finpulse.api.server import ApiServer
from finpulse.errors import ConfigError
from finpulse.metrics import Metrics
from finpulse.report import load_report_data, resolve_range, write_report
from finpulse.schemas import Alert
from finpulse.services.metrics import serve_metrics
from finpulse.services.monitor import MonitorService
from finpulse.services.notifier import build_notifier
from finpulse.services.scorer import (
    ScorerService,
    ScorerStats,
    load_engine,
    register_model,
)
from finpulse.services.webhook_receiver import Received, WebhookReceiver
from finpulse.settings import KafkaSettings, Settings
from finpulse.storage import Storage
from finpulse.storage.keys import create_key
from finpulse.storage.outbox import pending_count
from finpulse.storage.registry import ModelRegistry
from finpulse.storage.subscriptions import create_subscription
from ingest.broker import EmbeddedBroker
from ingest.producer import PostProducer
from ingest.replay import read_posts, replay
from ingest.topics import ensure_topics
from models import DEFAULT_MODEL_DIR
from monitor.evidence import POSTS_SEPARATOR
from monitor.rules import RuleSet

logger = logging.getLogger(__name__)

# The company whose held-out negative tweets make the stream's burst (scripts/make_demo_stream.py).
BURST_TICKER = "UBER"

MALFORMED: tuple[bytes, ...] = (
    b"this is not JSON",
    b'{"id": "bad-1", "source": "news", "published_at": "2026-11-24T10:00:00Z"}',
    b'{"id": "bad-2", "source": "news", "text": "Naive time", "published_at": "2026-11-24 10:00"}',
    b"\xff\xfe not utf-8",
)


def bundled_stream() -> Path:
    return Path(str(resources.files("finpulse").joinpath("data", "demo_stream.jsonl")))


@dataclass
class DemoResult:
    """What the demo did; ``summary()`` renders it for the terminal."""

    stats: ScorerStats
    published: int
    model_version: str
    database_url: str
    metrics_url: str | None
    bootstrap_servers: str
    embedded_broker: bool
    aggregates: int
    alerts: list[Alert] = field(default_factory=list)
    wall_s: float = 0.0
    report: Path | None = None
    webhook_url: str = ""
    webhook: list[Received] = field(default_factory=list)
    api_url: str | None = None
    api_key: str = ""

    def summary(self) -> str:
        s = self.stats
        lines = [
            "",
            "finpulse demo: done",
            f"  posts scored     {s.scored:,} of {self.published:,} published "
            f"({s.invalid} malformed sent to the dead-letter topic)",
            f"  throughput       {s.scored / s.elapsed_s:,.0f} posts/s end to end, "
            f"{s.scored / max(s.inference_s, 1e-9):,.0f} posts/s in the model ({self.model_version})",
            f"  aggregates       {self.aggregates:,} ticker windows (1m, 5m, 1h)",
            f"  alerts fired     {len(self.alerts)}",
        ]
        for alert in self.alerts:
            why, _, posts = alert.explanation.partition(POSTS_SEPARATOR)
            lines.append(f"    {alert.ticker:6} {alert.rule:21} {alert.window:3} "
                         f"fired {alert.fired_at:%Y-%m-%d %H:%M} UTC, {alert.severity}")
            lines.append(f"           why: {why.strip()}")
            if posts:
                lines.append(f"           {_shorten(posts.strip(), 110)}")
        lines.append(f"  subscriber       webhook {self.webhook_url} ({BURST_TICKER} alerts), "
                     f"{len(self.webhook)} deliveries received")
        for got in self.webhook:
            check = "signature ok" if got.signature_ok else "BAD SIGNATURE"
            lines.append(f"    {got.event:9} {got.alert_id}  delivery {got.delivery_id[:12]}…, {check}"
                         + (", duplicate" if got.duplicate else ""))
        broker = "embedded Tansu broker (stopped)" if self.embedded_broker else "configured broker"
        lines += [
            f"  broker           {self.bootstrap_servers}, {broker}",
            f"  metrics          {self.metrics_url or 'disabled'} (served while the demo ran)",
            f"  api              {self.api_url or 'not started'} (served while the demo ran; "
            f"OpenAPI at /openapi.json)",
            f"  database         {self.database_url}",
            *([f"  report           {self.report.resolve()} (open it in a browser)"] if self.report else []),
            f"  wall time        {self.wall_s:.1f} s",
            "",
            "Query what was stored:",
            f"  FINPULSE_DATABASE_URL={self.database_url} finpulse db alerts",
            f"  FINPULSE_DATABASE_URL={self.database_url} finpulse db aggregates --ticker {BURST_TICKER} --window 1h",
            f"  FINPULSE_DATABASE_URL={self.database_url} finpulse db scores --ticker {BURST_TICKER} --limit 10",
            f"  FINPULSE_DATABASE_URL={self.database_url} finpulse deliveries list",
            f"  FINPULSE_DATABASE_URL={self.database_url} finpulse api   # then, with this reader key:",
            f"  curl -H 'Authorization: Bearer {self.api_key}' "
            f"'http://127.0.0.1:8000/v1/alerts?ticker={BURST_TICKER}'",
        ]
        return "\n".join(lines)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def run_demo(
    settings: Settings,
    *,
    stream: Path | None = None,
    rate: float | None = None,
    progress: bool = True,
    report: Path | None = None,
) -> DemoResult:
    """Run the demo end to end; see the module docstring.

    Args:
        settings: the database, broker and model to use. No broker configured: the
            embedded one is started on a free loopback port.
        stream: a JSONL/CSV file of posts; None: the bundled sample stream.
        rate: publish at most this many posts per second (None: as fast as possible).
        progress: show a progress bar on stderr.
        report: write the HTML report (``finpulse report``) of what was stored here.
    """
    started = time.perf_counter()
    stream = stream or bundled_stream()
    n_posts = sum(1 for _ in read_posts(stream))
    with contextlib.ExitStack() as stack:
        embedded = settings.kafka.bootstrap_servers is None
        bootstrap: str = (
            stack.enter_context(EmbeddedBroker()).bootstrap_servers
            if embedded
            else str(settings.kafka.bootstrap_servers)
        )
        update: dict[str, object] = {"bootstrap_servers": bootstrap}
        if "session_timeout_ms" not in settings.kafka.model_fields_set:
            # A demo joins its consumer group in ~3 s rather than ~23 s.
            update.update(session_timeout_ms=6000, heartbeat_interval_ms=1000)
        kafka = settings.kafka.model_copy(update=update)
        settings = settings.model_copy(update={"kafka": kafka})
        ensure_topics(kafka)

        storage = Storage(settings.database_url)
        stack.callback(storage.dispose)
        storage.migrate()
        metrics = Metrics()
        metrics_url = None
        endpoint = serve_metrics(metrics, settings, any_port_if_taken=True)
        if endpoint is not None:
            stack.callback(endpoint[0].shutdown)
            metrics_url = endpoint[1]

        receiver = stack.enter_context(WebhookReceiver())
        subscription = create_subscription(storage, channel="webhook", target=receiver.url,
                                           name="demo-webhook", tickers=[BURST_TICKER])
        receiver.secret = subscription["secret"]
        api_key = create_key(storage, "reader", "demo")[1]
        api_url = _start_api(settings, storage, metrics, stack)
        if progress and api_url:
            tqdm.write(f"API at {api_url} while the demo runs (reader key {api_key})", file=sys.stderr)

        engine = load_engine(settings, settings.model.path)
        register_model(ModelRegistry(storage), engine, settings.model.path or DEFAULT_MODEL_DIR)

        total = n_posts + len(MALFORMED)
        stop = threading.Event()
        failures: list[BaseException] = []

        def publish() -> None:
            try:
                _publish(kafka, stream, rate)
            except BaseException as exc:  # handed to the main thread below
                failures.append(exc)
                stop.set()

        publisher = threading.Thread(target=publish, name="demo-publisher", daemon=True)
        service = ScorerService(settings, engine=engine, storage=storage, metrics=metrics)
        stack.callback(service.close)
        publisher.start()
        bar = tqdm(total=total, desc="scoring", unit="post", disable=not progress, dynamic_ncols=True)
        # Log lines (malformed messages, say) print above the bar instead of through it.
        with bar, logging_redirect_tqdm():
            stats = service.run(stop, until_consumed=total, on_batch=bar.update)
        publisher.join()
        if failures:
            raise failures[0]

        monitor = MonitorService(
            storage, RuleSet.load(settings.alerts.rules_file), metrics, settings.monitor
        )
        result = monitor.run_once()
        if report is not None:
            when = resolve_range(storage, "7d")
            write_report(load_report_data(storage, when, model_dir=DEFAULT_MODEL_DIR), report)
        # Alerting wrote the outbox; the notifier delivers it, as `finpulse notifier` would.
        notifier = build_notifier(settings, storage, metrics, stack)
        deadline = time.monotonic() + 20
        while pending_count(storage) and time.monotonic() < deadline:
            notifier.run_once()
            notifier.drain(10)
    return DemoResult(
        stats=stats,
        published=total,
        model_version=engine.version,
        database_url=settings.database_url,
        metrics_url=metrics_url,
        bootstrap_servers=bootstrap,
        embedded_broker=embedded,
        aggregates=result.aggregates,
        alerts=result.fired,
        wall_s=time.perf_counter() - started,
        report=report,
        webhook_url=receiver.url,
        webhook=list(receiver.received),
        api_url=api_url,
        api_key=api_key,
    )


def _start_api(
    settings: Settings, storage: Storage, metrics: Metrics, stack: contextlib.ExitStack
) -> str | None:
    """Serve the API in a thread on ``api.port`` (a free port if taken); its URL, or None."""
    app = create_app(storage, settings, metrics)
    for port in (settings.api.port, 0):
        server = ApiServer(app, settings.api.host, port)
        try:
            server.start()
        except ConfigError:
            logger.info("port %d is taken; serving the API on a free port", port)
            continue
        stack.callback(server.stop)
        return server.url
    return None


def _publish(kafka: KafkaSettings, stream: Path, rate: float | None) -> None:
    """The demo's producer: a few malformed messages first, then the stream."""
    with PostProducer(kafka) as producer:
        for i, bad in enumerate(MALFORMED):
            producer.publish_raw(kafka.news_topic if i % 2 == 0 else kafka.social_topic, bad)
        replay(stream, producer, rate=rate)

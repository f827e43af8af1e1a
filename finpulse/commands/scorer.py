"""``finpulse scorer``: the long-running scoring service."""

from __future__ import annotations

import argparse
import contextlib
import logging

from finpulse.errors import ConfigError
from finpulse.services.signals import stop_on_signals
from finpulse.settings import Settings

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("scorer", help="consume raw posts, score them, store them (runs until SIGTERM)")
    parser.add_argument("--reload-interval", type=float, default=30.0, metavar="S",
                        help="seconds between checks for a new champion model (default 30)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.metrics import Metrics
    from finpulse.services.metrics import serve_metrics
    from finpulse.services.scorer import ModelReloader, ScorerService
    from finpulse.storage import Storage
    from finpulse.storage.registry import ModelRegistry
    from ingest.topics import ensure_topics

    if not settings.kafka.bootstrap_servers:
        raise ConfigError(
            "no Kafka broker configured: set FINPULSE_KAFKA__BOOTSTRAP_SERVERS (or try `finpulse demo`)",
            field="kafka.bootstrap_servers",
        )
    if args.reload_interval <= 0:
        raise ConfigError("--reload-interval must be a positive number of seconds", field="reload_interval")
    stop = stop_on_signals()
    ensure_topics(settings.kafka)
    with contextlib.ExitStack() as cleanup:
        storage = Storage(settings.database_url)
        cleanup.callback(storage.dispose)
        storage.migrate()
        metrics = Metrics()
        endpoint = serve_metrics(metrics, settings)
        if endpoint is not None:
            cleanup.callback(endpoint[0].shutdown)
        reloader = ModelReloader(settings, ModelRegistry(storage), interval_s=args.reload_interval,
                                 background=True)
        service = ScorerService(settings, engine=reloader.initial(), storage=storage,
                                metrics=metrics, reloader=reloader)
        cleanup.callback(service.close)
        logger.info("scorer up: model %s, topics %s", service.engine.version,
                    ", ".join(settings.kafka.raw_topics))
        stats = service.run(stop)
    logger.info("scorer stopped: %d scored, %d invalid in %d batches", stats.scored, stats.invalid, stats.batches)
    return 0

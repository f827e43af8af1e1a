"""``finpulse notifier``: deliver alert events from the outbox to subscribers."""

from __future__ import annotations

import argparse
import contextlib

from finpulse.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("notifier", help="deliver alerts to subscribers (webhook, e-mail, "
                                             "Slack, Kafka) from the outbox")
    parser.add_argument("--once", action="store_true",
                        help="send what is due now, wait for it, and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.metrics import Metrics
    from finpulse.services.metrics import serve_metrics
    from finpulse.services.notifier import build_notifier
    from finpulse.services.signals import stop_on_signals
    from finpulse.storage import Storage

    storage = Storage(settings.database_url)
    storage.migrate()
    metrics = Metrics()
    with contextlib.ExitStack() as stack:
        stack.callback(storage.dispose)
        notifier = build_notifier(settings, storage, metrics, stack)
        if args.once:
            started = notifier.run_once()
            notifier.drain()
            print(f"{started} deliveries attempted")
            return 0
        endpoint = serve_metrics(metrics, settings)
        if endpoint is not None:
            stack.callback(endpoint[0].shutdown)
        notifier.run(stop_on_signals(), settings.notifier.poll_interval_s)
    return 0

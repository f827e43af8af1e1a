"""``finpulse monitor``: periodic window aggregation and alert evaluation."""

from __future__ import annotations

import argparse

from finpulse.errors import ConfigError
from finpulse.services.signals import stop_on_signals
from finpulse.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("monitor", help="aggregate scores per ticker and window, raise alerts")
    parser.add_argument("--interval", type=float, default=10.0, metavar="S",
                        help="seconds between passes (default 10)")
    parser.add_argument("--once", action="store_true", help="run one pass and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.metrics import Metrics
    from finpulse.services.metrics import serve_metrics
    from finpulse.services.monitor import MonitorService
    from finpulse.services.policy import retry_transient
    from finpulse.storage import Storage
    from monitor.rules import RuleSet

    if args.interval <= 0:
        raise ConfigError("--interval must be a positive number of seconds", field="interval")
    rules = RuleSet.load(settings.alerts.rules_file)
    storage = Storage(settings.database_url)
    if args.once:
        storage.migrate()
    else:
        # A service waits out a database that is not up yet, as it rides out outages later.
        stop = stop_on_signals()
        retry_transient(storage.migrate, stop=stop, what="migrating the database")
        if stop.is_set():
            storage.dispose()
            return 0
    metrics = Metrics()
    service = MonitorService(storage, rules, metrics, settings.monitor)
    endpoint = None
    try:
        if args.once:
            result = service.run_once()
            print(f"{result.aggregates} aggregates written, {len(result.fired)} alerts fired")
            for alert in result.fired:
                print(f"  {alert.ticker:6} {alert.rule:21} {alert.window:3} {alert.explanation}")
        else:
            endpoint = serve_metrics(metrics, settings)
            service.run(stop, interval_s=args.interval)
    finally:
        storage.dispose()
        if endpoint is not None:
            endpoint[0].shutdown()
    return 0

"""``finpulse alerts backtest``: what a rules file would have fired over stored history.

    finpulse alerts backtest --rules FILE --since ISO [--until ISO] [--warmup 3d] [--json]

Nothing is written to the database (see ``finpulse.services.backtest``). The table lists,
per rule and ticker, how many alerts would fire and when; ``--json`` prints one object
with the same summary and every alert. ``register_backtest(alerts_subparsers)`` adds the
action to the ``alerts`` command group (``finpulse.commands.alerts``).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from finpulse.commands.output import time_arg
from finpulse.settings import Settings


def register_backtest(actions: Any) -> None:
    """Add ``backtest`` to the ``alerts`` group's subparsers."""
    parser = actions.add_parser(
        "backtest",
        help="replay rules over stored history without writing alerts",
        description="Replay alert rules over stored posts and scores (event time) and print, "
        "per rule and ticker, how many alerts would fire and when. Writes nothing.",
    )
    parser.add_argument("--rules", metavar="FILE", type=Path,
                        help="rules YAML (default: alerts.rules_file, else the bundled rules)")
    parser.add_argument("--since", metavar="TIME", type=time_arg("since"), required=True,
                        help="report alerts fired at/after this time: ISO 8601 (UTC if no offset) or 7d, 12h")
    parser.add_argument("--until", metavar="TIME", type=time_arg("until"),
                        help="...and before this time (default: now)")
    parser.add_argument("--warmup", metavar="DURATION", type=_duration,
                        help="history before --since for the baselines, e.g. 3d "
                        "(default: what the rules need)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _duration(value: str) -> timedelta:
    from monitor.rules import parse_duration

    try:
        parsed = parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not isinstance(parsed, timedelta) or parsed < timedelta(0):
        raise argparse.ArgumentTypeError(f"not a duration: {value!r}")
    return parsed


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.services.backtest import run_backtest
    from finpulse.storage import Storage
    from monitor.rules import RuleSet

    rules = RuleSet.load(args.rules if args.rules is not None else settings.alerts.rules_file)
    until = args.until or datetime.now(timezone.utc)
    storage = Storage(settings.database_url)
    try:
        result = run_backtest(storage, rules, args.since, until, args.warmup)
    finally:
        storage.dispose()
    groups = result.by_rule_and_ticker()
    if args.json:
        print(json.dumps({
            "since": _iso(result.since),
            "until": _iso(result.until),
            "warmup_from": _iso(result.warmup_from),
            "posts": result.posts,
            "scores": result.scores,
            "rules": list(result.rules),
            "warmup_alerts": result.warmup_alerts,
            "summary": [
                {"rule": rule, "ticker": ticker, "alerts": len(alerts),
                 "fired_at": [_iso(a.fired_at) for a in alerts]}
                for rule, ticker, alerts in groups
            ],
            "alerts": [
                {"id": a.id, "rule": a.rule, "ticker": a.ticker, "window": a.window,
                 "severity": a.severity, "fired_at": _iso(a.fired_at),
                 "resolved_at": _iso(a.resolved_at), "value": a.value,
                 "threshold": a.threshold, "baseline": a.baseline,
                 "explanation": a.explanation, "post_ids": list(a.post_ids)}
                for a in result.alerts
            ],
        }, indent=2))
        return 0
    from finpulse.commands.db import format_table

    print(
        f"backtest {_iso(result.since)} .. {_iso(result.until)} "
        f"(baselines from {_iso(result.warmup_from)}): {result.posts} posts, "
        f"{len(result.rules)} rules, {len(result.alerts)} alerts"
        + (f" ({result.warmup_alerts} more during the warm-up, not counted)"
           if result.warmup_alerts else "")
    )
    rows = [
        (rule, ticker or "-", len(alerts),
         ", ".join(a.fired_at.astimezone(timezone.utc).strftime("%m-%d %H:%M") for a in alerts)
         or "-")
        for rule, ticker, alerts in groups
    ]
    print(format_table(("rule", "ticker", "alerts", "fired at (UTC)"), rows))
    return 0

"""``finpulse alerts``: list and acknowledge alerts (one subcommand per action).

    finpulse alerts list [--state firing] [--ticker T] [--rule R] [--severity S] [--since 7d]
    finpulse alerts ack ALERT_ID [--by NAME] [--comment TEXT]
    finpulse alerts backtest --rules FILE --since ISO [--until ISO] [--json]

Each action is a subparser with its own ``func``; ``backtest`` lives in
``finpulse.commands.backtest``.
"""

from __future__ import annotations

import argparse
import getpass

from finpulse.commands.output import add_format, emit, open_storage, time_arg
from finpulse.errors import ConfigError
from finpulse.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    from finpulse.commands.backtest import register_backtest

    parser = sub.add_parser("alerts", help="list, acknowledge and backtest alerts")
    actions = parser.add_subparsers(dest="alerts_action", metavar="ACTION",
                                    parser_class=type(parser))
    actions.required = True
    _register_list(actions)
    _register_ack(actions)
    register_backtest(actions)


def _register_list(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser("list", help="alerts, most recently fired first")
    parser.add_argument("--state", choices=["firing", "resolved"])
    parser.add_argument("--ticker", metavar="T")
    parser.add_argument("--rule", metavar="R")
    parser.add_argument("--severity", choices=["info", "warning", "critical"])
    parser.add_argument("--since", type=time_arg("since"), metavar="WHEN",
                        help="fired at/after: ISO time or duration back from now (7d)")
    add_format(parser, paged=True)
    parser.set_defaults(func=run_list)


def _register_ack(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser("ack", help="acknowledge an alert (no more updates until it resolves)")
    parser.add_argument("alert_id", metavar="ALERT_ID")
    parser.add_argument("--by", metavar="NAME", help="who acknowledges (default: the OS user)")
    parser.add_argument("--comment", metavar="TEXT")
    add_format(parser)
    parser.set_defaults(func=run_ack)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.history import list_alerts

    storage = open_storage(settings)
    try:
        page = list_alerts(storage, state=args.state, ticker=args.ticker, rule=args.rule,
                           severity=args.severity, since=args.since, limit=args.limit,
                           cursor=args.cursor)
    except ValueError as exc:
        raise ConfigError(f"cursor: {exc}", field="cursor") from exc
    finally:
        storage.dispose()
    emit(args, page.items, ["fired_at", "state", "severity", "rule", "ticker", "window", "value",
                            "threshold", "acked_by", "id"], page.next_cursor)
    return 0


def run_ack(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.history import acknowledge_alert

    storage = open_storage(settings)
    try:
        alert = acknowledge_alert(storage, args.alert_id, args.by or getpass.getuser(), args.comment)
    finally:
        storage.dispose()
    if alert is None:
        raise ConfigError(f"no alert {args.alert_id!r}", field="alert_id")
    emit(args, [alert], ["id", "state", "acked_by", "acked_at", "ack_comment"])
    return 0

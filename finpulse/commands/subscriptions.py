"""``finpulse subscriptions``: who gets which alerts.

    finpulse subscriptions add --channel webhook --target URL [--ticker T ...] [--rule R ...]
                               [--source S ...] [--min-severity warning] [--name N] [--secret S]
    finpulse subscriptions list
    finpulse subscriptions rm ID
"""

from __future__ import annotations

import argparse

from finpulse.commands.output import add_format, emit, open_storage
from finpulse.errors import ConfigError
from finpulse.settings import Settings

COLUMNS = ["id", "name", "channel", "target", "tickers", "rules", "sources", "min_severity",
           "active"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("subscriptions", help="add, list and remove alert subscriptions")
    actions = parser.add_subparsers(dest="subscriptions_action", metavar="ACTION",
                                    parser_class=type(parser))
    actions.required = True

    add = actions.add_parser("add", help="subscribe a webhook, Slack, e-mail or Kafka target")
    add.add_argument("--channel", required=True, choices=["webhook", "slack", "email", "kafka"])
    add.add_argument("--target", metavar="URL|ADDRESS|TOPIC",
                     help="webhook/Slack URL, e-mail address, or topic (kafka: finpulse.alerts)")
    add.add_argument("--name", metavar="N")
    add.add_argument("--ticker", action="append", default=[], metavar="T", help="repeatable")
    add.add_argument("--rule", action="append", default=[], metavar="R", help="repeatable")
    add.add_argument("--source", action="append", default=[], metavar="S", help="repeatable")
    add.add_argument("--min-severity", choices=["info", "warning", "critical"], default="info")
    add.add_argument("--secret", metavar="S", help="webhook signing secret (default: random)")
    add.add_argument("--inactive", action="store_true", help="add it paused")
    add_format(add)
    add.set_defaults(func=run_add)

    lst = actions.add_parser("list", help="subscriptions, newest first")
    add_format(lst, paged=True)
    lst.set_defaults(func=run_list)

    rm = actions.add_parser("rm", help="remove a subscription")
    rm.add_argument("subscription_id", metavar="ID")
    rm.set_defaults(func=run_rm)


def run_add(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.subscriptions import create_subscription

    storage = open_storage(settings)
    try:
        sub = create_subscription(
            storage, channel=args.channel, target=args.target, name=args.name,
            tickers=args.ticker, rules=args.rule, sources=args.source,
            min_severity=args.min_severity, secret=args.secret, active=not args.inactive)
    except ValueError as exc:
        raise ConfigError(str(exc), field=str(exc).split(":")[0]) from exc
    finally:
        storage.dispose()
    emit(args, [sub], [*COLUMNS, "secret"])
    return 0


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.subscriptions import list_subscriptions

    storage = open_storage(settings)
    try:
        page = list_subscriptions(storage, limit=args.limit, cursor=args.cursor)
    except ValueError as exc:
        raise ConfigError(f"cursor: {exc}", field="cursor") from exc
    finally:
        storage.dispose()
    emit(args, page.items, COLUMNS, page.next_cursor)
    return 0


def run_rm(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.subscriptions import remove_subscription

    storage = open_storage(settings)
    try:
        removed = remove_subscription(storage, args.subscription_id)
    finally:
        storage.dispose()
    if not removed:
        raise ConfigError(f"no subscription {args.subscription_id!r}", field="subscription_id")
    print(f"removed subscription {args.subscription_id}")
    return 0

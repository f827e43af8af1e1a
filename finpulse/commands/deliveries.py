"""``finpulse deliveries``: what the notifier sent, retries, and what is dead.

    finpulse deliveries list [--status pending|delivered|dead]
    finpulse deliveries retry ID        (send a dead delivery again, same id)
"""

from __future__ import annotations

import argparse

from finpulse.commands.output import add_format, emit, open_storage
from finpulse.errors import ConfigError
from finpulse.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("deliveries", help="list alert deliveries; retry dead ones")
    actions = parser.add_subparsers(dest="deliveries_action", metavar="ACTION",
                                    parser_class=type(parser))
    actions.required = True
    lst = actions.add_parser("list", help="deliveries, newest first")
    lst.add_argument("--status", choices=["pending", "delivered", "dead"])
    add_format(lst, paged=True)
    lst.set_defaults(func=run_list)
    retry = actions.add_parser("retry", help="queue a dead delivery again (same delivery id)")
    retry.add_argument("delivery_id", metavar="ID")
    retry.set_defaults(func=run_retry)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.subscriptions import list_deliveries

    storage = open_storage(settings)
    try:
        page = list_deliveries(storage, status=args.status, limit=args.limit, cursor=args.cursor)
    except ValueError as exc:
        raise ConfigError(f"cursor: {exc}", field="cursor") from exc
    finally:
        storage.dispose()
    emit(args, page.items, ["created_at", "status", "attempts", "channel", "subscription_name",
                            "kind", "alert_id", "last_error", "id"], page.next_cursor)
    return 0


def run_retry(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.outbox import redeliver

    storage = open_storage(settings)
    try:
        queued = redeliver(storage, args.delivery_id)
    finally:
        storage.dispose()
    if not queued:
        raise ConfigError(f"no dead delivery {args.delivery_id!r}", field="delivery_id")
    print(f"queued delivery {args.delivery_id} again")
    return 0

"""``finpulse keys``: API keys. ``create`` prints the new key alone on its last line.

    finpulse keys create --role reader|analyst|admin [--name N]
    finpulse keys list
    finpulse keys revoke ID
"""

from __future__ import annotations

import argparse

from finpulse.commands.output import add_format, emit, open_storage
from finpulse.errors import ConfigError
from finpulse.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("keys", help="create, list and revoke API keys")
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    create = actions.add_parser("create", help="create a key (printed once, on the last line)")
    create.add_argument("--role", required=True, choices=["reader", "analyst", "admin"])
    create.add_argument("--name", metavar="N")
    create.set_defaults(func=run_create)
    lst = actions.add_parser("list", help="every key (never the key itself)")
    add_format(lst, paged=True)
    lst.set_defaults(func=run_list)
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id", metavar="ID")
    revoke.set_defaults(func=run_revoke)


def run_create(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.keys import create_key

    storage = open_storage(settings)
    try:
        key, text = create_key(storage, args.role, args.name)
    finally:
        storage.dispose()
    print(f"created {key.role} key {key.id} ({key.name}); it is shown only now:")
    print(text)
    return 0


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.keys import list_keys

    storage = open_storage(settings)
    try:
        page = list_keys(storage, limit=args.limit, cursor=args.cursor)
    except ValueError as exc:
        raise ConfigError(f"cursor: {exc}", field="cursor") from exc
    finally:
        storage.dispose()
    emit(args, page.items, ["id", "name", "role", "created_at", "revoked_at"], page.next_cursor)
    return 0


def run_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.keys import revoke_key

    storage = open_storage(settings)
    try:
        revoked = revoke_key(storage, args.key_id)
    finally:
        storage.dispose()
    if not revoked:
        raise ConfigError(f"no active key {args.key_id!r}", field="key_id")
    print(f"revoked key {args.key_id}")
    return 0

"""Output shared by the query-style commands: a table for people, ``--json`` or ``--csv``.

Also the argument types those commands share (times, positive integers) and opening the
database. Lists are paged like the API's: ``--limit`` and ``--cursor``; when there is a
next page its cursor is printed on stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from finpulse.api.params import parse_time
from finpulse.commands.db import format_table
from finpulse.settings import Settings
from finpulse.storage import Storage


def time_arg(name: str) -> Any:
    """An argparse type for ``--since``/``--until``: ISO 8601 or ``7d``/``12h``/``30m``."""

    def parse(value: str) -> datetime:
        try:
            return parse_time(value, name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def positive(value: str) -> int:
    """An argparse type for a positive integer."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def add_format(parser: argparse.ArgumentParser, paged: bool = False) -> None:
    """Add ``--json``/``--csv`` (and ``--limit``/``--cursor`` for lists)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print JSON instead of a table")
    group.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    if paged:
        parser.add_argument("--limit", type=positive, default=50, metavar="N",
                            help="at most N rows (default 50)")
        parser.add_argument("--cursor", metavar="C", help="the next page's cursor, as printed")


def open_storage(settings: Settings) -> Storage:
    """The configured database, migrated."""
    storage = Storage(settings.database_url)
    storage.migrate()
    return storage


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return value


def emit(
    args: argparse.Namespace,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    next_cursor: str | None = None,
) -> None:
    """Print ``rows`` as a table of ``columns``, or every field as JSON/CSV."""
    if getattr(args, "json", False):
        print(json.dumps(list(rows), indent=2, default=str, ensure_ascii=False))
    elif getattr(args, "csv", False):
        fields = list(rows[0]) if rows else list(columns)
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _plain(v) for k, v in row.items()})
    elif not rows:
        print("(none)")
    else:
        print(format_table(columns, [[_cell(row.get(c)) for c in columns] for row in rows]))
    if next_cursor:
        print(f"more: --cursor {next_cursor}", file=sys.stderr)


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "*"
    return value

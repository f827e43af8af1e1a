"""``finpulse db``: migrate the database and read its history (scores, aggregates, alerts).

    finpulse db upgrade
    finpulse db alerts [--state firing] [--ticker T] [--json]
    finpulse db aggregates --ticker T [--window 1h] [--since ISO] [--until ISO] [--json]
    finpulse db scores [--ticker T] [--since ISO] [--limit N] [--json]

Tables are for people (risk teams at a terminal); ``--json`` prints one JSON array of
the records for scripts. The database is ``settings.database_url``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from finpulse.errors import ConfigError
from finpulse.settings import Settings

logger = logging.getLogger(__name__)

_MAX_CELL = 60
# Columns whose sign carries meaning (sentiment, z-scores) are printed with one.
_SIGNED = {"score", "mean_score", "weighted", "value", "threshold"}


def register(subparsers: Any) -> None:
    """Add ``finpulse db`` and its actions."""
    parser = subparsers.add_parser(
        "db",
        help="migrate the database; list scores, aggregates and alerts",
        description="Migrate the database and read its history: scores, aggregates, alerts.",
    )
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", parser_class=type(parser))
    actions.required = True

    actions.add_parser("upgrade", help="create or migrate the tables (alembic upgrade head)")

    alerts = actions.add_parser("alerts", help="alerts, most recent first")
    alerts.add_argument("--state", choices=["firing", "resolved"])
    alerts.add_argument("--ticker", metavar="T")

    aggregates = actions.add_parser("aggregates", help="one ticker's window aggregates")
    aggregates.add_argument("--ticker", metavar="T", required=True)
    aggregates.add_argument("--window", choices=["1m", "5m", "1h", "1d"], default="1h")
    aggregates.add_argument(
        "--since", metavar="ISO", type=_timestamp, help="windows starting at/after"
    )
    aggregates.add_argument(
        "--until", metavar="ISO", type=_timestamp, help="windows starting before"
    )

    scores = actions.add_parser("scores", help="scored posts, newest first")
    scores.add_argument("--ticker", metavar="T")
    scores.add_argument("--since", metavar="ISO", type=_timestamp, help="published at/after")
    scores.add_argument("--limit", metavar="N", type=_positive, default=50)

    for action in (alerts, aggregates, scores):
        action.add_argument(
            "--json", action="store_true", help="print a JSON array instead of a table"
        )
    parser.set_defaults(func=run)


def _timestamp(value: str) -> datetime:
    """ISO 8601 date or datetime; a time without an offset is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _cell(value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    text = " ".join(str(value).split())
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with a header rule; numbers right-aligned."""
    cells = [[_cell(v, h in _SIGNED) for v, h in zip(row, headers, strict=True)] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        bool(rows) and all(isinstance(r[i], (int, float)) for r in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _print(
    records: Sequence[Any], as_json: bool, headers: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    if as_json:
        print(
            json.dumps([r.model_dump(mode="json") for r in records], indent=2, ensure_ascii=False)
        )
    elif not records:
        print("(none)")
    else:
        print(format_table(headers, rows))


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``finpulse db ACTION``."""
    from finpulse.storage import Storage

    storage = Storage(settings.database_url)
    try:
        if args.db_action == "upgrade":
            storage.migrate()
            print(f"database {storage!r} is at revision {storage.revision()}")
            return 0
        if storage.revision() is None:
            raise ConfigError(
                "the database has no finpulse tables yet: run `finpulse db upgrade`",
                field="database_url",
            )
        if args.db_action == "alerts":
            alerts = storage.alerts(state=args.state, ticker=args.ticker)
            _print(
                alerts,
                args.json,
                [
                    "fired_at",
                    "state",
                    "severity",
                    "rule",
                    "ticker",
                    "window",
                    "value",
                    "threshold",
                    "resolved_at",
                    "explanation",
                ],
                [
                    (
                        a.fired_at,
                        a.state,
                        a.severity,
                        a.rule,
                        a.ticker,
                        a.window,
                        a.value,
                        a.threshold,
                        a.resolved_at,
                        a.explanation,
                    )
                    for a in alerts
                ],
            )
        elif args.db_action == "aggregates":
            aggs = storage.aggregates(args.ticker, args.window, since=args.since, until=args.until)
            _print(
                aggs,
                args.json,
                [
                    "start",
                    "ticker",
                    "window",
                    "n",
                    "mean_score",
                    "weighted",
                    "neg_share",
                    "per_min",
                ],
                [
                    (
                        a.start,
                        a.ticker,
                        a.window,
                        a.n,
                        a.mean_score,
                        a.weighted_score,
                        a.negative_share,
                        a.volume,
                    )
                    for a in aggs
                ],
            )
        else:
            scored = storage.scores(ticker=args.ticker, since=args.since, limit=args.limit)
            _print(
                scored,
                args.json,
                ["published_at", "id", "tickers", "label", "score", "conf", "model", "text"],
                [
                    (
                        s.published_at,
                        s.id,
                        ",".join(s.tickers),
                        s.label,
                        s.score,
                        s.confidence,
                        s.model_version,
                        s.title or s.text,
                    )
                    for s in scored
                ],
            )
        return 0
    finally:
        storage.dispose()

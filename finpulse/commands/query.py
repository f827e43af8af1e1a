"""``finpulse query``: the history risk teams ask for, as the API serves it.

    finpulse query sentiment --ticker AAPL --since 7d [--window 1h] [--json|--csv]
    finpulse query posts [--ticker T] [--source S] [--label L] [--since] [--until] [--q TEXT]
"""

from __future__ import annotations

import argparse

from finpulse.commands.output import add_format, emit, open_storage, time_arg
from finpulse.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("query", help="query history: sentiment series, posts")
    actions = parser.add_subparsers(dest="query_action", metavar="ACTION", parser_class=type(parser))
    actions.required = True

    sentiment = actions.add_parser("sentiment", help="a ticker's sentiment series")
    sentiment.add_argument("--ticker", required=True, metavar="T")
    sentiment.add_argument("--window", choices=["1m", "5m", "1h", "1d"], default="1h")
    sentiment.add_argument("--since", type=time_arg("since"), metavar="WHEN",
                           help="ISO time or duration back from now (7d, 12h)")
    sentiment.add_argument("--until", type=time_arg("until"), metavar="WHEN")
    add_format(sentiment, paged=True)
    sentiment.set_defaults(func=run_sentiment)

    posts = actions.add_parser("posts", help="scored posts, newest first")
    posts.add_argument("--ticker", metavar="T")
    posts.add_argument("--source", metavar="S")
    posts.add_argument("--label", choices=["negative", "neutral", "positive"])
    posts.add_argument("--since", type=time_arg("since"), metavar="WHEN")
    posts.add_argument("--until", type=time_arg("until"), metavar="WHEN")
    posts.add_argument("--q", metavar="TEXT", help="text search (full-text on PostgreSQL)")
    add_format(posts, paged=True)
    posts.set_defaults(func=run_posts)


def _page(call):  # type: ignore[no-untyped-def]
    from finpulse.errors import ConfigError

    try:
        return call()
    except ValueError as exc:
        raise ConfigError(f"cursor: {exc}", field="cursor") from exc


def run_sentiment(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.history import sentiment_series

    storage = open_storage(settings)
    try:
        page = _page(lambda: sentiment_series(storage, args.ticker, args.window, since=args.since,
                                              until=args.until, limit=args.limit, cursor=args.cursor))
    finally:
        storage.dispose()
    emit(args, page.items, ["start", "ticker", "window", "n", "mean_score", "weighted_score",
                            "negative_share", "volume"], page.next_cursor)
    return 0


def run_posts(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.history import search_posts

    storage = open_storage(settings)
    try:
        page = _page(lambda: search_posts(
            storage, ticker=args.ticker, source=args.source, label=args.label, since=args.since,
            until=args.until, q=args.q, limit=args.limit, cursor=args.cursor))
    finally:
        storage.dispose()
    emit(args, page.items, ["published_at", "id", "source", "tickers", "label", "score",
                            "model_version", "text"], page.next_cursor)
    return 0

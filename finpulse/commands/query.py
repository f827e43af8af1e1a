"""``finpulse query``: the history risk teams ask for, as the API serves it.

    finpulse query sentiment --ticker AAPL --since 7d [--window 1h] [--model V] [--json|--csv]
    finpulse query posts [--ticker T] [--source S] [--label L] [--since] [--until] [--q TEXT] [--model V]
    finpulse query shadow [--since 7d] [--until WHEN] [--model V] [--json|--csv]

``--model VERSION`` reads that version's scores (shadow and rescored ones included) instead
of the live ones; ``shadow`` compares the shadow model with the live scores per source.
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
    sentiment.add_argument("--model", metavar="VERSION", help=MODEL_HELP)
    add_format(sentiment, paged=True)
    sentiment.set_defaults(func=run_sentiment)

    posts = actions.add_parser("posts", help="scored posts, newest first")
    posts.add_argument("--ticker", metavar="T")
    posts.add_argument("--source", metavar="S")
    posts.add_argument("--label", choices=["negative", "neutral", "positive"])
    posts.add_argument("--since", type=time_arg("since"), metavar="WHEN")
    posts.add_argument("--until", type=time_arg("until"), metavar="WHEN")
    posts.add_argument("--q", metavar="TEXT", help="text search (full-text on PostgreSQL)")
    posts.add_argument("--model", metavar="VERSION", help=MODEL_HELP)
    add_format(posts, paged=True)
    posts.set_defaults(func=run_posts)

    shadow = actions.add_parser(
        "shadow", help="the shadow model beside the live one, per source",
        description="Agreement, mean confidence and label mix of the shadow model and the live "
                    "scores of the same posts, per shadow version and source.")
    shadow.add_argument("--since", type=time_arg("since"), metavar="WHEN",
                        help="shadow scores stored at or after (ISO time or 7d, 12h)")
    shadow.add_argument("--until", type=time_arg("until"), metavar="WHEN")
    shadow.add_argument("--model", metavar="VERSION", help="one shadow version (default: all)")
    add_format(shadow)
    shadow.set_defaults(func=run_shadow)


MODEL_HELP = "that model version's scores instead of the live ones (see finpulse rescore)"


def _model(storage, model):  # type: ignore[no-untyped-def]
    from finpulse.errors import ConfigError
    from finpulse.storage.versions import known_version

    if model is not None and not known_version(storage, model):
        raise ConfigError(f"model: unknown model version {model!r}", field="model")
    return model


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
        model = _model(storage, args.model)
        page = _page(lambda: sentiment_series(storage, args.ticker, args.window, since=args.since,
                                              until=args.until, limit=args.limit, cursor=args.cursor,
                                              model=model))
    finally:
        storage.dispose()
    emit(args, page.items, ["start", "ticker", "window", "n", "mean_score", "weighted_score",
                            "negative_share", "volume"], page.next_cursor)
    return 0


def run_posts(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.history import search_posts

    storage = open_storage(settings)
    try:
        model = _model(storage, args.model)
        page = _page(lambda: search_posts(
            storage, ticker=args.ticker, source=args.source, label=args.label, since=args.since,
            until=args.until, q=args.q, limit=args.limit, cursor=args.cursor, model=model))
    finally:
        storage.dispose()
    emit(args, page.items, ["published_at", "id", "source", "tickers", "label", "score",
                            "model_version", "role", "text"], page.next_cursor)
    return 0


def run_shadow(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.comparison import shadow_report

    storage = open_storage(settings)
    try:
        model = _model(storage, args.model)
        items = shadow_report(storage, since=args.since, until=args.until, version=model)
    finally:
        storage.dispose()
    if args.json or args.csv:
        rows = [
            {"version": i["version"], "source": i["source"], "n": i["n"], "agreement": i["agreement"],
             "live_versions": i["live_versions"],
             "live_confidence": i["live"]["mean_confidence"],
             "shadow_confidence": i["shadow"]["mean_confidence"],
             **{f"live_{k}": v for k, v in i["live"]["labels"].items()},
             **{f"shadow_{k}": v for k, v in i["shadow"]["labels"].items()}}
            for i in items
        ] if args.csv else items
        emit(args, rows, list(rows[0]) if rows else ["version", "source", "n", "agreement"])
        return 0
    if not items:
        print("no shadow scores (finpulse registry shadow VERSION starts a shadow model)")
        return 0
    table = [
        {"version": i["version"], "source": i["source"], "n": i["n"],
         "agreement": f"{i['agreement']:.1%}",
         "confidence live/shadow": f"{i['live']['mean_confidence']:.3f} / "
                                   f"{i['shadow']['mean_confidence']:.3f}",
         "neg/neu/pos live": _mix(i["live"]["labels"]),
         "neg/neu/pos shadow": _mix(i["shadow"]["labels"])}
        for i in items
    ]
    emit(args, table, list(table[0]))
    return 0


def _mix(labels: dict[str, float]) -> str:
    return "/".join(f"{labels[k]:.0%}" for k in ("negative", "neutral", "positive"))

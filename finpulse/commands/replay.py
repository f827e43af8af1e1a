"""``finpulse replay FILE [--rate N]``: publish a CSV/JSONL file of posts onto the raw topics."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from finpulse.errors import ConfigError, DataError
from finpulse.settings import Settings

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="publish a CSV/JSONL file of posts onto the raw topics",
        description=(
            "Publish the posts of FILE (.jsonl: one Post JSON per line; .csv: columns "
            "id,source,text,published_at[,title,url,author,tickers,lang]) onto the news "
            "and social topics of the configured broker."
        ),
    )
    parser.add_argument("file", type=Path, metavar="FILE", help=".csv or .jsonl file of posts")
    parser.add_argument("--rate", type=float, metavar="N", help="messages per second at most")
    parser.add_argument(
        "--skip-invalid", action="store_true", help="skip bad rows instead of stopping at the first"
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        metavar="N",
        help="partitions of topics created if missing (default: kafka.topic_partitions, 3)",
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Replay the file; prints how many posts were published.

    Raises:
        ConfigError: no broker is configured, or ``--rate`` is not positive.
        DataError: the file or one of its rows is bad.
        IngestError: the broker is unreachable or refused a message.
    """
    from ingest.producer import PostProducer
    from ingest.replay import replay
    from ingest.topics import ensure_topics

    kafka = settings.kafka
    if not kafka.bootstrap_servers:
        raise ConfigError(
            "no Kafka broker configured: set FINPULSE_KAFKA__BOOTSTRAP_SERVERS=host:port "
            "(or run `finpulse demo`, which starts an embedded broker and replays a stream)",
            field="kafka.bootstrap_servers",
        )
    if args.rate is not None and args.rate <= 0:
        raise ConfigError("--rate must be positive", field="rate")
    if args.partitions is not None and args.partitions < 1:
        raise ConfigError("--partitions must be at least 1", field="partitions")
    if not args.file.is_file():
        raise DataError(f"file not found: {args.file}")
    ensure_topics(kafka, partitions=args.partitions)
    with PostProducer(kafka) as producer:
        count = replay(
            args.file,
            producer,
            rate=args.rate,
            progress=args.progress,
            skip_invalid=args.skip_invalid,
        )
    print(f"published {count} post(s) from {args.file} to {kafka.bootstrap_servers}")
    return 0

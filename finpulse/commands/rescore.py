"""``finpulse rescore``: re-score stored posts with another registered model version.

    finpulse rescore --model VERSION --since 7d [--until WHEN] [--batch-size N] [--json]

Both versions' scores are kept: the live ones stay what alerts used, the new ones are
stored under VERSION and read with ``finpulse query ... --model VERSION`` or the API's
``?model=VERSION``. Running it again adds only what is missing.
"""

from __future__ import annotations

import argparse
import json
import sys

from finpulse.commands.output import open_storage, positive, time_arg
from finpulse.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "rescore", help="re-score stored posts with another model version, keeping both",
        description="Score the posts published in [--since, --until) with a registered model "
                    "version and store those scores beside the live ones (which alerts keep "
                    "using). Idempotent. See docs/model-versions.md.")
    parser.add_argument("--model", required=True, metavar="VERSION",
                        help="a registered model version (finpulse registry list)")
    parser.add_argument("--since", required=True, type=time_arg("since"), metavar="WHEN",
                        help="ISO time or duration back from now (7d, 12h)")
    parser.add_argument("--until", type=time_arg("until"), metavar="WHEN",
                        help="before this time (default: now)")
    parser.add_argument("--batch-size", type=positive, default=256, metavar="N",
                        help="posts per model call and transaction (default 256)")
    parser.add_argument("--json", action="store_true", help="print the totals as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.errors import ConfigError
    from finpulse.services.rescore import RescoreResult, engine_for, rescore

    if args.until is not None and args.since >= args.until:
        raise ConfigError("--since must be before --until", field="since")
    storage = open_storage(settings)
    try:
        engine = engine_for(settings, storage, args.model)

        def progress(done: RescoreResult) -> None:
            share = f" ({done.scored / done.todo:.0%})" if done.todo else ""
            rate = done.scored / max(done.seconds, 1e-9)
            print(f"rescore {done.version}: {done.scored:,}/{done.todo:,} posts{share}, "
                  f"{rate:,.1f} posts/s", file=sys.stderr, flush=True)

        result = rescore(storage, engine, since=args.since, until=args.until,
                         batch_size=args.batch_size, on_batch=progress)
    finally:
        storage.dispose()
    if args.json:
        print(json.dumps({
            "model": result.version,
            "since": result.since.isoformat() if result.since else None,
            "until": result.until.isoformat() if result.until else None,
            "scored": result.scored,
            "stored": result.stored,
            "batches": result.batches,
            "seconds": round(result.seconds, 3),
        }))
    else:
        print(f"rescored {result.scored:,} posts with {result.version} ({result.stored:,} new "
              f"scores, {result.batches} batches, {result.seconds:.1f} s); read them with "
              f"--model {result.version}")
    return 0

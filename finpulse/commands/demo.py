"""``finpulse demo``: the whole pipeline on embedded defaults, in a few minutes."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from finpulse.errors import ConfigError
from finpulse.settings import Settings

DEMO_DATABASE = Path("var") / "demo.db"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="replay a sample stream through broker, model, database and alerts, then summarise",
    )
    parser.add_argument("--stream", type=Path, metavar="FILE",
                        help="JSONL/CSV posts to replay (default: the bundled sample stream)")
    parser.add_argument("--rate", type=float, metavar="N", help="publish at most N posts/s")
    parser.add_argument("--database", metavar="URL",
                        help=f"database URL (default: a fresh SQLite file, {DEMO_DATABASE})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.services.demo import run_demo

    if args.log_level is None and not settings.model_fields_set & {"log_level"}:
        # The demo speaks through its progress bar and summary; keep warnings only.
        logging.getLogger().setLevel(logging.WARNING)

    if args.rate is not None and args.rate <= 0:
        raise ConfigError("--rate must be a positive number of posts per second", field="rate")
    if args.stream is not None and not args.stream.is_file():
        raise ConfigError(f"stream file not found: {args.stream}", field="stream")
    url = args.database
    if url is None:
        # The demo starts from an empty database of its own each time, so its summary
        # describes this run only.
        DEMO_DATABASE.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{DEMO_DATABASE}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{DEMO_DATABASE}"
    settings = settings.model_copy(update={"database_url": url})
    result = run_demo(settings, stream=args.stream, rate=args.rate,
                      progress=not args.no_progress and sys.stderr.isatty(),
                      report=DEMO_DATABASE.parent / "demo-report.html")
    print(result.summary())
    return 0

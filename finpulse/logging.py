"""Log set-up. Only the CLI calls ``configure``; modules just use ``logging.getLogger(__name__)``."""

from __future__ import annotations

import logging
import sys


def configure(level: str = "INFO") -> None:
    """Send finpulse's logs to stderr, one line each, and quiet chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kafka", "urllib3", "alembic", "transformers", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))

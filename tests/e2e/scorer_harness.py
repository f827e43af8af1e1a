"""Test-only: run ``finpulse scorer`` and SIGKILL it at an exact step of a batch.

    python -m tests.e2e.scorer_harness CHECKPOINT N [scorer arguments...]

The scorer process kills itself with SIGKILL the N-th time a batch reaches CHECKPOINT
(one of ``finpulse.services.scorer.CHECKPOINTS``; ``none`` never crashes); ``term:CHECKPOINT``
sends itself SIGTERM there instead (a shutdown request landing mid-batch). Production code
has no such switch: this script replaces the no-op ``ScorerService.checkpoint``.
With ``FP_TEST_KAFKA_DEBUG`` set, kafka-python's consumer and coordinator log at DEBUG
(a stall in a fault test then shows its fetch and group state).
"""

from __future__ import annotations

import os
import signal
import sys

from finpulse.services import scorer


def main() -> int:
    point, nth = sys.argv[1], int(sys.argv[2])
    sig = signal.SIGKILL
    if point.startswith("term:"):
        point, sig = point[len("term:"):], signal.SIGTERM
    if point != "none" and point not in scorer.CHECKPOINTS:
        print(f"unknown checkpoint {point!r}", file=sys.stderr)
        return 2
    seen = 0

    def checkpoint(self: scorer.ScorerService, name: str) -> None:
        nonlocal seen
        if name == point:
            seen += 1
            if seen == nth:
                print(f"harness: {sig.name} at {name} #{seen}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), sig)

    scorer.ScorerService.checkpoint = checkpoint  # type: ignore[method-assign]
    if os.environ.get("FP_TEST_KAFKA_DEBUG"):
        import logging

        import finpulse.logging as logs

        original = logs.configure

        def configure(level: str = "INFO") -> None:
            original(level)
            logging.getLogger("kafka").setLevel(logging.DEBUG)
            for quiet in ("kafka.protocol", "kafka.record", "kafka.conn"):
                logging.getLogger(quiet).setLevel(logging.INFO)

        logs.configure = configure
    from finpulse.cli import main as cli

    return cli(["scorer", *sys.argv[3:]])


if __name__ == "__main__":
    sys.exit(main())

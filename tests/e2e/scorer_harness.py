"""Test-only: run ``finpulse scorer`` and SIGKILL it at an exact step of a batch.

    python -m tests.e2e.scorer_harness CHECKPOINT N [scorer arguments...]

The scorer process kills itself with SIGKILL the N-th time a batch reaches CHECKPOINT
(one of ``finpulse.services.scorer.CHECKPOINTS``; ``none`` never crashes); ``term:CHECKPOINT``
sends itself SIGTERM there instead (a shutdown request landing mid-batch). Production code
has no such switch: this script replaces the no-op ``ScorerService.checkpoint``.
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
    from finpulse.cli import main as cli

    return cli(["scorer", *sys.argv[3:]])


if __name__ == "__main__":
    sys.exit(main())

"""``finpulse retrain``: train a challenger on feedback + base data, gate it, maybe promote it.

``finpulse retrain`` runs once; ``--every 24h`` runs on a schedule until SIGTERM (and early
when a model-health alert fires); ``finpulse retrain runs`` lists the recorded runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from typing import Any

from finpulse.errors import ConfigError
from finpulse.settings import Settings

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def period_seconds(text: str) -> float:
    """Parse a period such as ``24h``, ``30m``, ``1d``, ``90s`` or ``3600`` (seconds).

    Raises:
        argparse.ArgumentTypeError: not a positive period.
    """
    match = _PERIOD.match(text)
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"] if match else 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(
            f"invalid period {text!r}: a positive number with s, m, h or d (e.g. 24h)")
    return seconds


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "retrain", help="retrain on analysts' feedback; promote only past the gold-set gate",
        description="Train a challenger on the base data, the analysts' feedback and a replay "
                    "sample, evaluate it and the champion on the frozen gold set and on "
                    "held-back feedback, and promote it only if the gate passes (see "
                    "docs/retraining.md). `finpulse retrain runs` lists recorded runs.")
    parser.add_argument("--every", type=period_seconds, metavar="PERIOD",
                        help="run periodically (24h, 30m, 1d, ...) until SIGTERM; a firing "
                             "model-health alert starts a run early")
    parser.add_argument("--train-config", metavar="FILE",
                        help="YAML/JSON TrainConfig options (default: the champion's own)")
    parser.add_argument("--json", action="store_true", help="print each run's result as JSON")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    runs = actions.add_parser("runs", help="recorded retraining runs, newest first")
    runs.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    runs.add_argument("--json", action="store_true", dest="runs_json", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage import Storage

    storage = Storage(settings.database_url)
    try:
        storage.migrate()
        if args.action == "runs":
            return _list_runs(storage, args)
        return _retrain(storage, args, settings)
    finally:
        storage.dispose()


def _retrain(storage: Any, args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.metrics import Metrics
    from finpulse.services.retrain import RetrainService
    from models.config import TrainConfig

    config = TrainConfig.from_file(args.train_config) if args.train_config else None
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("threads: at least 1", field="threads")
        import torch

        torch.set_num_threads(args.threads)
    metrics = Metrics()
    service = RetrainService(settings, storage, metrics, device=args.device)
    if args.every is None:
        _print(service.run_once(config), args.json)
        return 0
    from finpulse.services.metrics import serve_metrics
    from finpulse.services.signals import stop_on_signals

    stop = stop_on_signals()
    endpoint = serve_metrics(metrics, settings)
    try:
        service.run(stop, every_s=args.every, train_config=config,
                    on_result=lambda result: _print(result, args.json))
    finally:
        if endpoint is not None:
            endpoint[0].shutdown()
    logger.info("retraining schedule stopped")
    return 0


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
        return
    gold, feedback = result["gold"], result["feedback"]
    print(f"{result['decision']}: challenger {result['challenger']} "
          f"vs champion {result['champion']} ({result['seconds']:.0f} s)")
    print(f"  gold macro-F1      champion {gold['champion']['macro_f1']:.4f}  "
          f"challenger {gold['challenger']['macro_f1']:.4f}  (n={gold['champion']['n']})")
    if feedback:
        print(f"  feedback macro-F1  champion {feedback['champion']['macro_f1']:.4f}  "
              f"challenger {feedback['challenger']['macro_f1']:.4f}  "
              f"(n={feedback['champion']['n']})")
    print("  data: " + ", ".join(f"{k} {v}" for k, v in result["data"].items()))
    print(f"  reason: {result['reason']}", flush=True)


def _list_runs(storage: Any, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigError("--limit: at least 1", field="limit")
    runs = storage.retrain_runs(limit=args.limit)
    if args.runs_json or args.json:
        print(json.dumps([run.to_dict() for run in runs], indent=2))
        return 0
    if not runs:
        print("no retraining runs recorded (finpulse retrain)")
    for r in runs:
        gold = r.gold or {}
        f1 = " -> ".join(f"{gold[m]['macro_f1']:.4f}" for m in ("champion", "challenger")
                         if m in gold)
        seconds = f"{r.seconds:.0f}s" if r.seconds is not None else "-"
        print(f"{r.started_at:%Y-%m-%d %H:%M} {r.decision or 'running':9} {seconds:>6} "
              f"{r.champion} -> {r.challenger or '-'}  gold macro-F1 {f1 or '-'}  "
              f"[{r.trigger}] {r.reason or ''}")
    return 0

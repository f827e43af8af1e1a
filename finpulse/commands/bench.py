"""``finpulse bench``: measure inference throughput, naive versus the engine's batching."""

from __future__ import annotations

import argparse
import json
from typing import Any

from finpulse.settings import Settings


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand."""
    parser = subparsers.add_parser(
        "bench", help="measure inference throughput (texts/s)",
        description="Score the same texts one per call, in fixed unsorted batches, and "
                    "length-sorted in fp32 and bf16, in one run, and print the rates.")
    parser.add_argument("--model", metavar="DIR", help="artifact directory (default: bundled)")
    parser.add_argument("--data", metavar="CSV",
                        help="CSV with a text column (default: bench/texts.csv, MIT tweets)")
    parser.add_argument("--n", type=int, default=1000, help="texts per variant (default 1000)")
    parser.add_argument("--naive-n", type=int, default=200,
                        help="texts for the slow one-per-call variant (default 200)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the benchmark and print it."""
    from finpulse.errors import ConfigError
    from models.bench import read_texts, run_bench

    if args.n < 1 or args.naive_n < 1:
        raise ConfigError("--n and --naive-n must be at least 1", field="n")
    texts = read_texts(args.data, args.n)
    result = run_bench(texts, args.model or settings.model.path,
                       device=args.device or settings.model.device, naive_n=args.naive_n)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model {result['model_version']} on {result['device']} ({result['threads']} threads), "
          f"{result['n']} texts")
    for name, rate in result["texts_per_s"].items():
        print(f"  {name:<22} {rate:>9.1f} texts/s  x{result['speedup_vs_one_per_call'][name]}")
    return 0

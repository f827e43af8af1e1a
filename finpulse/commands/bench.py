"""``finpulse bench``: inference throughput (and macro-F1 with labels), naive versus the engine."""

from __future__ import annotations

import argparse
import json
from typing import Any

from finpulse.settings import Settings


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand."""
    parser = subparsers.add_parser(
        "bench", help="measure inference throughput (texts/s)",
        description="Score the same texts one per call, with a transformers pipeline, in "
                    "fixed and length-sorted batches (fp32, bf16, int8) and with the engine's "
                    "default, interleaved in rounds, and print median rates (and macro-F1 "
                    "when the file has a label column).")
    parser.add_argument("--model", metavar="DIR", help="artifact directory (default: bundled)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="artifact the naive variants (one per call, pipeline, torch "
                             "batches) run, e.g. the full-depth teacher of a distilled "
                             "--model (default: the model itself)")
    parser.add_argument("--data", "--texts", dest="data", metavar="CSV",
                        help="CSV with a text (and optional label) column "
                             "(default: bench/texts.csv, MIT tweets with labels)")
    parser.add_argument("--n", type=int, default=1000, help="texts per variant (default 1000)")
    parser.add_argument("--naive-n", type=int, default=200,
                        help="texts the slow one-per-call variant is timed on (default 200)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; rates are medians (default 3)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the benchmark and print it."""
    from finpulse.errors import ConfigError
    from models.bench import read_bench_data, run_bench

    if args.n < 1 or args.naive_n < 1 or args.rounds < 1:
        raise ConfigError("--n, --naive-n and --rounds must be at least 1", field="n")
    data = read_bench_data(args.data, args.n)
    cfg = settings.model
    result = run_bench(data, args.model or cfg.path, device=args.device or cfg.device,
                       naive_n=args.naive_n, rounds=args.rounds, cache_dir=cfg.cache_dir,
                       dtype=cfg.dtype, backend=cfg.backend, baseline=args.baseline)
    if args.json:
        print(json.dumps(result))
        return 0
    if result["baseline_version"] != result["model_version"]:
        print(f"naive variants run {result['baseline_version']}")
    print(f"model {result['model_version']} on {result['device']} ({result['threads']} threads), "
          f"{result['n']} texts, median of {result['rounds']} rounds; default: "
          f"{result['default_backend']} {result['default_dtype']}")
    f1 = result.get("macro_f1", {})
    for name, rate in result["texts_per_s"].items():
        line = (f"  {name:<20} {rate:>8.1f} texts/s  x{result['speedup_vs_one_per_call'][name]:<6}"
                f" x{result['speedup_vs_hf_pipeline'][name]:<6} vs hf_pipeline")
        if name in f1:
            line += f"  macro-F1 {f1[name]:.4f}"
        print(line)
    return 0

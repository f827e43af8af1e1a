"""GPU benchmark: the engine on CUDA, and where the host side becomes the limit.

On a CUDA machine, with the bundled model (or any artifact via ``FINPULSE_MODEL__PATH``),
on ``--n`` texts cycled from ``bench/texts.csv`` (tweets, ~25 tokens):

1. ``tokenizer``: the host's tokenizer alone (texts/s, all cores when
   ``TOKENIZERS_PARALLELISM=true``): the engine's tokenising and chunking (``engine``), and
   the plain ``tokenizer(texts)`` call (``call``);
2. ``gpu_forward``: the model alone on pre-tokenised, pre-uploaded, length-sorted batches of B
   texts (bf16, timed between CUDA synchronisations): the device's ceiling per batch size;
3. ``engine``: ``SentimentEngine.predict`` (tokenise, pad, upload, forward, softmax, download)
   for several ``batch_tokens`` budgets: what the scorer gets.

The end-to-end figures come from ``bench/e2e.py`` and ``bench/scale_out.py`` run on the same
machine (``bench/gpu_run.sh`` runs all three). Every rate is the median of ``--rounds``.

    PYTHONPATH=$PWD python bench/gpu.py --n 200000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from models.batching import pad
from models.bench import read_texts
from models.inference import SentimentEngine


def median_rate(count: int, action: Callable[[], None], rounds: int) -> float:
    """Median of ``count / seconds`` over ``rounds`` calls of ``action`` (after one warm-up)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    action()
    rates = []
    for _ in range(rounds):
        sync()
        started = time.perf_counter()
        action()
        sync()
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def tokenizer_rates(engine: SentimentEngine, texts: Sequence[str], rounds: int) -> dict[str, float]:
    """Texts/s of the engine's tokenising and chunking (``engine``), and of the plain
    ``tokenizer(texts)`` call a user would write (``call``)."""
    return {
        "engine": round(median_rate(len(texts), lambda: engine._chunk(texts), rounds), 1),
        "call": round(median_rate(len(texts), lambda: engine.tokenizer(
            list(texts), add_special_tokens=True, truncation=True,
            max_length=engine.max_length, verbose=False), rounds), 1),
    }


def forward_rates(engine: SentimentEngine, texts: Sequence[str], sizes: Sequence[int],
                  rounds: int) -> dict[str, float]:
    """Texts/s of the model alone, per batch size, inputs already on the device."""
    ids = engine.tokenizer(list(texts), truncation=True, max_length=engine.max_length,
                           verbose=False)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad_id = engine.tokenizer.pad_token_id or 0
    rates = {}
    for size in sizes:
        batches = []
        for start in range(0, len(order), size):
            batch, mask = pad([ids[i] for i in order[start:start + size]], pad_id)
            batches.append((batch.to(engine.device), mask.to(engine.device)))

        def run() -> None:
            with torch.inference_mode():
                for batch, mask in batches:
                    engine.model(batch, mask)

        rates[str(size)] = round(median_rate(len(ids), run, rounds), 1)
        del batches
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rates


def engine_rates(path: str | None, device: str, texts: Sequence[str], budgets: Sequence[int],
                 rounds: int) -> dict[str, dict[str, Any]]:
    """Texts/s of ``predict`` (all host work included), per ``batch_tokens`` budget."""
    rates = {}
    for budget in budgets:
        engine = SentimentEngine.load(path, device=device, batch_tokens=budget)
        rate = median_rate(len(texts), lambda: engine.predict_proba(texts), rounds)
        rates[str(budget)] = {"texts_per_s": round(rate, 1), "dtype": engine.info["dtype"]}
        del engine
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="texts (cycled from bench/texts.csv)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="256,1024,4096,16384",
                        help="texts per forward pass for gpu_forward")
    parser.add_argument("--budgets", default="16384,65536,262144,1048576",
                        help="engine batch_tokens budgets")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device (--device cpu runs a smoke test)", file=sys.stderr)
        return 2
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    budgets = [int(x) for x in args.budgets.split(",")]

    source = read_texts(None, 10**9)
    texts = [source[i % len(source)] for i in range(args.n)]
    path = os.environ.get("FINPULSE_MODEL__PATH") or None
    engine = SentimentEngine.load(path, device=args.device)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "n": len(texts), "engine": engine.info,
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "unset"),
    }
    result["tokenizer_texts_per_s"] = tokenizer_rates(engine, texts, args.rounds)
    print(f"tokenizer {result['tokenizer_texts_per_s']}", file=sys.stderr, flush=True)
    result["gpu_forward_texts_per_s"] = forward_rates(engine, texts, sizes, args.rounds)
    print(f"gpu_forward {result['gpu_forward_texts_per_s']}", file=sys.stderr, flush=True)
    del engine
    result["engine_texts_per_s"] = engine_rates(path, args.device, texts, budgets, args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

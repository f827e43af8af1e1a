"""Inference throughput, measured the naive way and the engine's way, in one run.

Each variant scores the same texts after a short warm-up; the ratios between variants in
one run are what to read (absolute numbers depend on the machine and its load).
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from finpulse.errors import DataError
from models.inference import SentimentEngine

logger = logging.getLogger(__name__)

#: MIT-licensed finance tweets shipped for benchmarking (see bench/README.md).
BENCH_TEXTS = Path(__file__).resolve().parent.parent / "bench" / "texts.csv"


def read_texts(path: str | Path | None = None, n: int = 1000) -> list[str]:
    """Read the first ``n`` texts of a CSV with a ``text`` column.

    Raises:
        DataError: the file is missing, has no ``text`` column, or no texts.
    """
    path = Path(path) if path else BENCH_TEXTS
    if not path.is_file():
        raise DataError(f"bench texts not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "text" not in (reader.fieldnames or []):
            raise DataError(f"{path}: no 'text' column")
        texts = [row["text"] for row, _ in zip(reader, range(n)) if row["text"].strip()]
    if not texts:
        raise DataError(f"{path}: no texts")
    return texts


def _rate(score: Callable[[Sequence[str]], Any], texts: Sequence[str]) -> float:
    score(texts[:8])  # warm-up: first-call allocations and kernel selection
    started = time.perf_counter()
    score(texts)
    return round(len(texts) / (time.perf_counter() - started), 1)


def run_bench(
    texts: Sequence[str],
    model: str | Path | None = None,
    *,
    device: str = "auto",
    naive_n: int = 200,
) -> dict[str, Any]:
    """Measure texts/s of several ways to score ``texts``.

    Variants: ``one_per_call`` (a forward pass per text, fp32, on ``naive_n`` texts),
    ``fixed_batches_fp32`` (input order, batches of 64 padded to their longest),
    ``unmerged_sorted_fp32`` (PEFT adapter kept separate; PEFT artifacts only),
    ``sorted_fp32`` (length-sorted, token-budget batches) and ``sorted_bf16``
    (the same in bf16), plus ``engine_default`` with the settings ``load`` picks.

    Args:
        texts: the texts to score.
        model: artifact directory (None: the bundled default).
        device: ``auto``, ``cpu`` or ``cuda``.
        naive_n: how many texts the slow one-per-call variant scores.

    Returns:
        ``n``, ``model_version``, ``device``, ``threads``, ``default_dtype``,
        ``texts_per_s`` (variant -> rate) and ``speedup_vs_one_per_call``.
    """
    fp32 = SentimentEngine.load(model, device=device, dtype="float32")
    rates: dict[str, float] = {}
    naive = list(texts[:naive_n])
    rates["one_per_call"] = _rate(lambda batch: [fp32.predict_proba([t]) for t in batch], naive)
    rates["fixed_batches_fp32"] = _rate(
        lambda batch: fp32.predict_proba(batch, sort=False, batch_size=64), texts)
    if fp32.manifest["method"] in ("lora", "ia3"):
        unmerged = SentimentEngine.load(model, device=device, dtype="float32", merge=False)
        rates["unmerged_sorted_fp32"] = _rate(unmerged.predict_proba, texts)
        del unmerged
    rates["sorted_fp32"] = _rate(fp32.predict_proba, texts)
    del fp32
    bf16 = SentimentEngine.load(model, device=device, dtype="bfloat16")
    rates["sorted_bf16"] = _rate(bf16.predict_proba, texts)
    del bf16
    default = SentimentEngine.load(model, device=device)
    rates["engine_default"] = _rate(default.predict, texts)
    base = rates["one_per_call"]
    return {
        "n": len(texts),
        "naive_n": len(naive),
        "model_version": default.version,
        "device": default.info["device"],
        "default_dtype": default.info["dtype"],
        "threads": torch.get_num_threads(),
        "texts_per_s": rates,
        "speedup_vs_one_per_call": {k: round(v / base, 2) for k, v in rates.items()},
    }

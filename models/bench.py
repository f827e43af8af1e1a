"""Inference throughput (and, with labels, macro-F1), the naive ways and the engine's, in one run.

Every variant scores the same texts. Variants run interleaved in rounds (each round runs
every variant once, after a warm-up), and the reported rate is the median over rounds, so a
burst of load from other processes hits all variants alike; the ratios between variants in
one run are what to read. When the texts have labels, each variant's macro-F1 is computed
from the probabilities of its own timed run.
"""

from __future__ import annotations

import csv
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finpulse.errors import DataError
from models.evaluate import compute_metrics
from models.hf_pipeline import make_pipeline, pipeline_proba
from models.inference import SentimentEngine, cpu_supports_bf16

logger = logging.getLogger(__name__)

#: MIT-licensed finance tweets shipped for benchmarking (see bench/README.md).
BENCH_TEXTS = Path(__file__).resolve().parent.parent / "bench" / "texts.csv"

Scorer = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class BenchTexts:
    """Texts to score and, when the file has a ``label`` column, their gold labels."""

    texts: list[str]
    labels: list[str] | None


def read_texts(path: str | Path | None = None, n: int = 1000) -> list[str]:
    """Read the first ``n`` texts of a CSV with a ``text`` column.

    Raises:
        DataError: the file is missing, has no ``text`` column, or no texts.
    """
    return read_bench_data(path, n).texts


def read_bench_data(path: str | Path | None = None, n: int = 1000) -> BenchTexts:
    """Read the first ``n`` texts (and labels, if there is a ``label`` column) of a CSV.

    Raises:
        DataError: the file is missing, has no ``text`` column, or no texts.
    """
    path = Path(path) if path else BENCH_TEXTS
    if not path.is_file():
        raise DataError(f"bench texts not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "text" not in columns:
            raise DataError(f"{path}: no 'text' column")
        rows = [row for row in reader if (row["text"] or "").strip()][:n]
    if not rows:
        raise DataError(f"{path}: no texts")
    labels = None
    if "label" in columns:
        labels = [(row["label"] or "").strip().lower() for row in rows]
    return BenchTexts([row["text"] for row in rows], labels)


def _one_per_call(engine: SentimentEngine) -> Scorer:
    return lambda texts: np.concatenate([engine.predict_proba([t]) for t in texts])


def _variants(model: str | Path | None, baseline: str | Path | None, device: str,
              cache_dir: Path | None, default_dtype: str,
              backend: str) -> tuple[dict[str, Scorer], SentimentEngine, SentimentEngine]:
    reference = baseline or model
    fp32 = SentimentEngine.load(reference, device=device, dtype="float32", backend="torch")
    default = SentimentEngine.load(model, device=device, dtype=default_dtype, backend=backend,
                                   cache_dir=cache_dir)
    pipe = make_pipeline(fp32.model, fp32.tokenizer, fp32.labels)
    variants: dict[str, Scorer] = {
        "one_per_call": _one_per_call(fp32),
        "hf_pipeline": lambda texts: pipeline_proba(pipe, texts, fp32.labels, fp32.max_length),
        "fixed_batches_fp32": lambda texts: fp32.predict_proba(texts, sort=False, batch_size=64),
        "sorted_fp32": fp32.predict_proba,
    }
    if fp32.device.type != "cpu" or cpu_supports_bf16():
        # Without bf16 units a CPU emulates it (24 texts/s against fp32's 174 on an AVX2 EPYC).
        bf16 = SentimentEngine.load(reference, device=device, dtype="bfloat16", backend="torch")
        variants["sorted_bf16"] = bf16.predict_proba
    if fp32.manifest["method"] in ("lora", "ia3"):
        unmerged = SentimentEngine.load(reference, device=device, dtype="float32",
                                        backend="torch", merge=False)
        variants["unmerged_sorted_fp32"] = unmerged.predict_proba
    if fp32.device.type == "cpu" and default.backend != "onnx":
        try:  # the int8 graph, for comparison, where the machine can run it
            int8 = SentimentEngine.load(reference, device=device, dtype="int8", backend="onnx",
                                        cache_dir=cache_dir)
            variants["onnx_int8"] = int8.predict_proba
        except Exception as exc:  # noqa: BLE001 - a comparison row, not the engine
            logger.info("onnx_int8 variant skipped: %s", exc)
    if baseline is not None:  # the engine's model in fp32 too: its own int8-vs-fp32 check
        variants["default_fp32"] = SentimentEngine.load(
            model, device=device, dtype="float32", backend="torch").predict_proba
    variants["engine_default"] = default.predict_proba
    return variants, default, fp32


def run_bench(
    data: BenchTexts,
    model: str | Path | None = None,
    *,
    device: str = "auto",
    naive_n: int = 200,
    rounds: int = 3,
    cache_dir: str | Path | None = None,
    dtype: str = "auto",
    backend: str = "auto",
    baseline: str | Path | None = None,
) -> dict[str, Any]:
    """Measure texts/s (and macro-F1 with labels) of several ways to score the same texts.

    Variants: ``one_per_call`` (a forward pass per text, fp32, timed on ``naive_n`` texts),
    ``hf_pipeline`` (transformers ``pipeline("text-classification", batch_size=64)``, fp32),
    ``fixed_batches_fp32`` (input order, batches of 64), ``sorted_fp32`` and ``sorted_bf16``
    (length-sorted token-budget batches, torch), ``unmerged_sorted_fp32`` (PEFT adapter kept
    separate; PEFT artifacts only), ``onnx_int8`` (when the default is not
    already that) and ``engine_default`` (what ``SentimentEngine.load`` picks, or the given
    ``dtype``/``backend``). With a ``baseline`` model every variant but the engine's runs
    that model (e.g. the full-depth teacher of a distilled default: what a user would
    otherwise run), and ``default_fp32`` adds the engine's own model in torch fp32.

    Args:
        data: the texts (and optional labels).
        model: artifact directory (None: the bundled default).
        device: ``auto``, ``cpu`` or ``cuda``.
        naive_n: how many texts the slow one-per-call variant is timed on.
        rounds: interleaved rounds; rates are medians over rounds.
        cache_dir: where ONNX graphs are cached.
        dtype: the engine's dtype setting (``auto`` picks per machine).
        backend: the engine's backend setting (``auto`` picks per machine).
        baseline: artifact the naive variants run; None: ``model`` itself.

    Returns:
        ``n``, ``naive_n``, ``rounds``, ``model_version``, ``baseline_version``, ``device``,
        ``threads``,
        ``default_backend``, ``default_dtype``, ``default_workers``, for the int8 graph
        ``default_int8`` (weight bits, smoothed), ``texts_per_s`` (variant -> median rate),
        ``texts_per_s_rounds`` (variant -> rate per round), ``speedup_vs_one_per_call`` and
        ``speedup_vs_hf_pipeline`` (median over rounds of the ratio within each round) and,
        with labels, ``macro_f1`` (variant -> macro-F1 on all ``n`` texts),
        ``macro_f1_delta_vs_fp32`` (variant -> minus ``sorted_fp32``'s) and, with a
        baseline, ``engine_default_delta_vs_its_fp32``.
    """
    texts = data.texts
    variants, default, reference = _variants(model, baseline, device,
                                             Path(cache_dir) if cache_dir else None, dtype,
                                             backend)
    naive = texts[:naive_n]
    samples: dict[str, list[float]] = {name: [] for name in variants}
    probabilities: dict[str, np.ndarray] = {}
    for _ in range(max(1, rounds)):
        for name, score in variants.items():
            subset = naive if name == "one_per_call" else texts
            score(subset[:8])  # warm-up: first-call allocations and kernel selection
            started = time.perf_counter()
            result = score(subset)
            samples[name].append(len(subset) / (time.perf_counter() - started))
            probabilities.setdefault(name, result)
    rates = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    report: dict[str, Any] = {
        "n": len(texts),
        "naive_n": len(naive),
        "rounds": max(1, rounds),
        "model_version": default.version,
        "baseline_version": reference.version,
        "device": default.info["device"],
        "default_backend": default.backend,
        "default_dtype": default.info["dtype"],
        "default_workers": default.info["workers"],
        **({"default_int8": default.info["int8"]} if "int8" in default.info else {}),
        "threads": torch.get_num_threads(),
        "texts_per_s": rates,
        "texts_per_s_rounds": {k: [round(v, 1) for v in vs] for k, vs in samples.items()},
        "speedup_vs_one_per_call": _speedups(samples, "one_per_call"),
        "speedup_vs_hf_pipeline": _speedups(samples, "hf_pipeline"),
    }
    if data.labels is not None:
        if len(naive) < len(texts):  # one text per call on the rest, untimed, for its F1
            rest = variants["one_per_call"](texts[len(naive):])
            probabilities["one_per_call"] = np.concatenate([probabilities["one_per_call"], rest])
        f1 = {name: round(compute_metrics(data.labels, probs, default.labels)["macro_f1"], 4)
              for name, probs in probabilities.items()}
        report["macro_f1"] = f1
        report["macro_f1_delta_vs_fp32"] = {k: round(v - f1["sorted_fp32"], 4) for k, v in f1.items()}
        if "default_fp32" in f1:  # the engine's model against itself in fp32
            report["engine_default_delta_vs_its_fp32"] = round(
                f1["engine_default"] - f1["default_fp32"], 4)
    return report


def _speedups(samples: dict[str, list[float]], reference: str) -> dict[str, float]:
    """Median over rounds of each variant's rate divided by ``reference``'s in the same round.

    Ratios within a round cancel most of the load that other processes put on a shared
    machine; the ratio of two medians would not.
    """
    return {name: round(statistics.median(v / r for v, r in zip(values, samples[reference])), 2)
            for name, values in samples.items()}

"""Evaluation: classification metrics, calibration, throughput and the confusion-matrix plot.

``compute_metrics`` is pure (labels + probabilities in, dict out) so it is tested against
scikit-learn on fixed arrays; ``evaluate_engine`` adds timing around a real engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finpulse.errors import DataError

logger = logging.getLogger(__name__)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> float:
    """Expected calibration error over equal-width confidence bins.

    ECE = sum over bins of (bin size / n) * |accuracy in bin - mean confidence in bin|.

    Args:
        confidence: the probability of the predicted class, shape ``(n,)``.
        correct: 1 where the prediction was right, shape ``(n,)``.
        bins: number of bins over [0, 1].
    """
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first bin.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            ece += members.mean() * gap
    return float(ece)


def compute_metrics(
    y_true: Sequence[str], probabilities: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1, confusion and ECE.

    Args:
        y_true: gold labels.
        probabilities: shape ``(n, len(labels))``, columns in ``labels`` order.
        labels: the label names.

    Returns:
        ``n``, ``accuracy``, ``macro_f1``, ``weighted_f1``, ``per_class`` (label ->
        precision, recall, f1, support), ``confusion`` (rows = gold, columns = predicted,
        in ``labels`` order), ``labels`` and ``ece``.

    Raises:
        DataError: no rows, a shape mismatch, or a gold label not in ``labels``.
    """
    n = len(y_true)
    if n == 0:
        raise DataError("nothing to evaluate: no rows")
    if probabilities.shape != (n, len(labels)):
        raise DataError(f"probabilities have shape {probabilities.shape}, expected {(n, len(labels))}")
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({y for y in y_true if y not in index})
    if unknown:
        raise DataError(f"unknown label(s) {', '.join(map(repr, unknown))}")
    gold = np.array([index[y] for y in y_true])
    predicted = probabilities.argmax(axis=1)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (gold, predicted), 1)
    per_class: dict[str, dict[str, float | int]] = {}
    f1s, supports = [], []
    for i, label in enumerate(labels):
        tp = confusion[i, i]
        predicted_i, support = confusion[:, i].sum(), confusion[i, :].sum()
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": float(precision), "recall": float(recall),
                            "f1": float(f1), "support": int(support)}
        f1s.append(f1)
        supports.append(support)
    correct = (gold == predicted).astype(np.float64)
    confidence = probabilities[np.arange(n), predicted].astype(np.float64)
    return {
        "n": n,
        "accuracy": float(correct.mean()),
        "macro_f1": float(np.mean(f1s)),
        "weighted_f1": float(np.average(f1s, weights=supports)),
        "per_class": per_class,
        "labels": list(labels),
        "confusion": confusion.tolist(),
        "ece": expected_calibration_error(confidence, correct),
    }


def evaluate_engine(
    engine: Any, rows: Sequence[tuple[str, str]], *, sources: Sequence[str] | str | None = None
) -> dict[str, Any]:
    """Score ``(text, label)`` rows with an engine and compute metrics and throughput.

    Args:
        engine: a ``models.inference.SentimentEngine``.
        rows: the labelled texts.
        sources: each text's source (one name for all, or one per row), for models trained
            with a source token; see ``SentimentEngine.predict_proba``.

    Returns:
        ``compute_metrics``'s dict plus ``texts_per_s``, ``seconds``, ``model_version``
        and ``dtype``.

    Raises:
        DataError: no rows.
    """
    if not rows:
        raise DataError("nothing to evaluate: no rows")
    texts = [text for text, _ in rows]
    started = time.perf_counter()
    probabilities = engine.predict_proba(texts, sources=sources)
    seconds = time.perf_counter() - started
    metrics = compute_metrics([label for _, label in rows], probabilities, engine.labels)
    metrics.update(
        texts_per_s=round(len(texts) / seconds, 1) if seconds > 0 else float("inf"),
        seconds=round(seconds, 3),
        model_version=engine.version,
        dtype=engine.info["dtype"],
    )
    return metrics


def plot_confusion(metrics: dict[str, Any], path: Path, title: str) -> Path:
    """Draw the confusion matrix (counts and row-normalised shading) as a PNG.

    Args:
        metrics: a dict with ``confusion`` and ``labels`` (from ``compute_metrics``).
        path: where to write the PNG.
        title: the plot title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(metrics["confusion"])
    labels = metrics["labels"]
    share = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=100)
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, col), count in np.ndenumerate(confusion):
        colour = "white" if share[row, col] > 0.6 else "black"
        ax.text(col, row, f"{count}\n{share[row, col]:.0%}", ha="center", va="center",
                color=colour, fontsize=9)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path

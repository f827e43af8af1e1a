"""Out-of-domain check of a model artifact on the two sets in ../shared/data/extra.

    PYTHONPATH=$PWD python scripts/ood_check.py MODEL_DIR [--out FILE.json]

- FinEntity (Reuters news, 3 classes): accuracy, macro-F1 and per-class F1 over all rows.
- StockEmotions (StockTwits, bullish/bearish, no neutral class): its last 1,000 rows (the
  dataset's own test split), scored as a binary task: positive when P(positive) >
  P(negative), neutral ignored; binary macro-F1 and accuracy, plus the share of texts
  whose arg-max is neutral.

Research tooling for docs/model-experiments.md: never train on these sets when using them
as the out-of-domain check.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.data import read_labelled_csv
from models.evaluate import evaluate_engine
from models.inference import SentimentEngine

EXTRA = Path("/work/shared/data/extra")


def binary_macro_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    """Macro-F1 over classes 0 and 1 of two 0/1 arrays."""
    scores = []
    for cls in (0, 1):
        tp = int(((predicted == cls) & (gold == cls)).sum())
        n_pred, n_gold = int((predicted == cls).sum()), int((gold == cls).sum())
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return float(np.mean(scores))


def ood_report(engine: SentimentEngine, extra: Path = EXTRA,
               limit: int | None = None) -> dict[str, Any]:
    """Score an engine on the two out-of-domain sets (see the module docstring).

    Args:
        engine: the loaded model.
        extra: the folder holding ``finentity.csv`` and ``stockemotions.csv``.
        limit: smoke tests only: the first ``limit`` FinEntity rows and the last ``limit``
            StockEmotions rows instead of all 841 and the last 1,000.

    Returns:
        ``model``, ``finentity`` (n, accuracy, macro_f1, per_class_f1) and ``stockemotions``
        (n, binary_macro_f1, binary_accuracy, argmax_neutral_share).
    """
    # The sets' names double as their sources: FinEntity is news, StockEmotions social
    # (what a model trained with a source token reads before each text).
    finentity = evaluate_engine(engine, read_labelled_csv(extra / "finentity.csv")[:limit],
                                sources="finentity")
    rows = read_labelled_csv(extra / "stockemotions.csv")[-min(limit or 1000, 1000):]
    proba = engine.predict_proba([text for text, _ in rows], sources="stockemotions")
    index = {label: i for i, label in enumerate(engine.labels)}
    gold = np.array([1 if label == "positive" else 0 for _, label in rows])
    predicted = (proba[:, index["positive"]] > proba[:, index["negative"]]).astype(int)
    return {
        "model": engine.version,
        "finentity": {"n": finentity["n"], "accuracy": finentity["accuracy"],
                      "macro_f1": finentity["macro_f1"],
                      "per_class_f1": {k: v["f1"] for k, v in finentity["per_class"].items()}},
        "stockemotions": {"n": len(rows), "binary_macro_f1": binary_macro_f1(gold, predicted),
                          "binary_accuracy": float((predicted == gold).mean()),
                          "argmax_neutral_share": float(
                              (proba.argmax(1) == index["neutral"]).mean())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("model")
    parser.add_argument("--extra", default=str(EXTRA), help="folder with the two CSV files")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    engine = SentimentEngine.load(args.model, device="cpu", dtype="auto")
    report = ood_report(engine, Path(args.extra))
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

"""The model card: data and licences, method, metrics, intended use and limits.

``write_card`` is called by training; ``comparison_table`` renders several artifacts side
by side (method, trainable parameters, training time, held-out test metrics per source)
next to FinBERT's published figures, for the card of the shipped default.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CARD = "MODEL_CARD.md"

# FinBERT (Araci 2019, arXiv:1908.10063), Table 2: accuracy on its own 20% test split.
FINBERT = {"params": "110M", "allagree_accuracy": 0.97, "all_accuracy": 0.86}

_LICENCES = {
    "phrasebank": "Financial PhraseBank v1.0 (Malo et al. 2014), CC BY-NC-SA 3.0: "
                  "non-commercial use only, derivatives share-alike",
    "twitter": "Twitter Financial News Sentiment (zeroshot), MIT",
}
_SOURCE_NAMES = {
    "phrasebank_allagree": "PhraseBank all-agree",
    "phrasebank_50agree": "PhraseBank 50-agree (all sentences)",
    "twitter_fin_train": "Twitter financial news",
}


def _hardware(manifest: dict[str, Any]) -> str:
    hardware = manifest.get("hardware")
    if not hardware:
        return "an unrecorded machine"
    autocast = "bf16 autocast" if hardware.get("bf16_autocast") else "fp32"
    return (f"{hardware['device']} ({hardware.get('machine', '?')}, "
            f"{hardware.get('threads', '?')} torch thread(s)), {autocast}")


def source_name(stem: str) -> str:
    """A readable name for a data file stem."""
    return _SOURCE_NAMES.get(stem, stem)


def comparison_table(artifacts: Sequence[str | Path]) -> str:
    """Render artifacts side by side as a Markdown table, plus a FinBERT reference row.

    Args:
        artifacts: artifact directories (each with manifest.json and metrics.json).

    Returns:
        The Markdown table.
    """
    from models.artifact import read_manifest

    sources = ["phrasebank_allagree", "phrasebank_50agree", "twitter_fin_train"]
    header = ["method", "version", "trainable params", "train time"]
    header += [f"{source_name(s)} acc / macro-F1" for s in sources] + ["all test acc / macro-F1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for directory in artifacts:
        manifest = read_manifest(directory)
        metrics = json.loads((Path(directory) / "metrics.json").read_text(encoding="utf-8"))
        cells = [manifest["method"], f"`{manifest['version']}`",
                 f"{manifest['trainable_params']:,}",
                 f"{manifest.get('train_seconds', 0) / 60:.1f} min"]
        for source in sources:
            found = metrics["test_by_source"].get(source)
            cells.append(f"{found['accuracy']:.3f} / {found['macro_f1']:.3f} (n={found['n']})"
                         if found else "-")
        cells.append(f"{metrics['test']['accuracy']:.3f} / {metrics['test']['macro_f1']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| FinBERT (published) | ProsusAI/finbert | {FINBERT['params']} (all) | - | "
                 f"{FINBERT['allagree_accuracy']:.2f} / - | {FINBERT['all_accuracy']:.2f} / - "
                 "| - | - |")
    return "\n".join(lines)


def write_card(
    directory: Path,
    manifest: dict[str, Any],
    config: Any,
    metrics: dict[str, Any],
    *,
    comparison: str | None = None,
    notes: str | None = None,
) -> Path:
    """Write ``MODEL_CARD.md`` for an artifact.

    Args:
        directory: the artifact directory.
        manifest: its manifest.
        config: the ``TrainConfig`` it was trained with.
        metrics: the dict written to ``metrics.json``.
        comparison: an optional side-by-side table (``comparison_table``).
        notes: optional extra Markdown (e.g. why one method was chosen).

    Returns:
        The card's path.
    """
    test = metrics["test"]
    by_source = metrics.get("test_by_source", {})
    stems = sorted({Path(p).stem for p in config.data})
    licences = sorted({text for key, text in _LICENCES.items() if any(key in s for s in stems)})
    source_rows = "\n".join(
        f"| {source_name(s)} | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | "
        f"{m.get('fp32_accuracy', m['accuracy']):.3f} |" for s, m in by_source.items())
    class_rows = "\n".join(
        f"| {label} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
        for label, v in test["per_class"].items())
    hyper = {k: v for k, v in config.to_dict().items() if k not in ("data", "progress")}
    text = f"""# Model card: `{manifest['version']}`

A three-class (negative / neutral / positive) financial sentiment classifier for finpulse:
the `{manifest['base']}` encoder (all-MiniLM-L6-v2, 6 layers, 384 hidden, ~22.7M parameters),
mean pooling and a linear head, fine-tuned with **{manifest['method']}**
({manifest['trainable_params']:,} trainable of {manifest['total_params']:,} parameters).
Score = P(positive) - P(negative).

## Intended use

Scoring short English financial texts (news headlines, wire sentences, finance tweets)
so that finpulse can aggregate sentiment per company over time and alert on abnormal moves.
Aggregates over many posts are the product; a single prediction is a noisy signal. It is not
investment advice and must not be the sole basis of a trading or credit decision.

## Data and licences

Trained with `finpulse train` on {', '.join(f'`{s}`' for s in stems)} (from `../shared/data`).
{chr(10).join(f'- {line}' for line in licences)}
- Base encoder: sentence-transformers/all-MiniLM-L6-v2, Apache-2.0.

Because PhraseBank is CC BY-NC-SA 3.0, **this model is a derivative of non-commercial data**:
use it for research and evaluation; for commercial use, retrain without PhraseBank
(`finpulse train --data twitter.csv ...`) or obtain a licence from the PhraseBank authors.

Texts were deduplicated by normalised text across files ({manifest.get('duplicates_dropped', 0)}
duplicate rows; {manifest.get('conflicts_dropped', 0)} texts with conflicting labels dropped),
then split train/validation/test {1 - config.validation - config.test:.0%} /
{config.validation:.0%} / {config.test:.0%}, stratified by source files and label, seed
{config.seed}. `split.csv` lists every example's SHA-1 (of the normalised text), label,
sources and split, without the text. PhraseBank all-agree sentences are a subset of 50-agree;
the per-source rows below count a sentence under every file it appears in.

## Training

{manifest['method']} on {_hardware(manifest)}; AdamW, linear warm-up then linear decay, gradient clipping, class-weighted
cross-entropy ({config.class_weighting}), early stopping on validation macro-F1.
Ran {manifest.get('epochs_run')} epochs, kept epoch {manifest.get('best_epoch')};
{manifest.get('train_seconds', 0) / 60:.1f} minutes on {manifest.get('train_examples')} training examples.

```json
{json.dumps(hyper, indent=1)}
```

## Results (held-out test split, never trained on or early-stopped on)

Overall: n={test['n']}, accuracy **{test['accuracy']:.3f}**, macro-F1 **{test['macro_f1']:.3f}**,
weighted-F1 {test['weighted_f1']:.3f}, ECE {test['ece']:.3f}, evaluated in {test['dtype']}.

| subset | n | accuracy | macro-F1 | accuracy in fp32 |
|---|---:|---:|---:|---:|
{source_rows}

| class | precision | recall | F1 | support |
|---|---:|---:|---:|---:|
{class_rows}

![confusion matrix](confusion.png)

FinBERT (Araci 2019) reports accuracy 0.97 on PhraseBank all-agree and 0.86 on all
PhraseBank sentences, with a 110M-parameter BERT-base further pre-trained on financial text,
on its own random 20% test split. Our split is different (10%, deduplicated, stratified), so
the comparison is indicative, not exact.
{comparison or ''}
{notes or ''}

## How the numbers were obtained

The test split was carved out before training and used once: after training, the saved
artifact was loaded through `models.inference.SentimentEngine` (the code that serves it) and
scored on the test split. Reproduce with `finpulse eval --model <this dir> --split test
--data <the same files>`, which selects the test rows by their hashes in `split.csv`.

## Limits

- English only; trained on short texts (≤{config.max_length} tokens); longer texts are scored in
  chunks and averaged, which dilutes mixed documents.
- PhraseBank sentences are 2013 Finnish-company wire news; the tweets are 2020-era. Domain
  shift (other markets, slang, sarcasm, new events) lowers accuracy silently.
- The labels describe the author's view of the news for the company, not market impact.
- Neutral is ~60% of the data; the confusions are mostly neutral vs. polar classes.
"""
    path = directory / CARD
    path.write_text(text, encoding="utf-8")
    return path


def rewrite_card(directory: str | Path, *, comparison: str | None = None,
                 notes: str | None = None) -> Path:
    """Regenerate an artifact's card from its saved files, e.g. to add a comparison table.

    Args:
        directory: the artifact directory.
        comparison: Markdown from ``comparison_table``.
        notes: extra Markdown.

    Returns:
        The card's path.
    """
    from models.artifact import read_manifest
    from models.config import TrainConfig

    directory = Path(directory)
    manifest = read_manifest(directory)
    config = TrainConfig.from_file(directory / "train_config.json")
    metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    return write_card(directory, manifest, config, metrics, comparison=comparison, notes=notes)

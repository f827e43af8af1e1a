"""A tiny BERT built in the test and synthetic labelled data, for fast model tests."""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = ["profit", "gain", "rise", "beat", "surge", "growth", "record", "upgrade"]
NEGATIVE = ["loss", "fall", "miss", "plunge", "cut", "lawsuit", "downgrade", "default"]
NEUTRAL = ["company", "said", "report", "quarter", "market", "shares", "today", "announced",
           "board", "meeting", "annual", "plan", "office", "new", "ceo", "the", "of", "in"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL,
         *[f"w{i}" for i in range(30)]]


def make_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Synthetic texts whose label is decided by one keyword (about 60% neutral)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        filler = rng.sample(NEUTRAL, rng.randint(3, 8)) + [f"w{i % 30}", f"w{(i * 7) % 30}"]
        roll = rng.random()
        if roll < 0.2:
            label, word = "positive", rng.choice(POSITIVE)
        elif roll < 0.4:
            label, word = "negative", rng.choice(NEGATIVE)
        else:
            label, word = "neutral", None
        if word:
            filler.insert(rng.randint(0, len(filler)), word)
        rows.append((" ".join(filler) + f" w{i % 29}", label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def build_tiny_base(directory: Path, hidden: int = 32, extra_words: tuple[str, ...] = ()) -> Path:
    """Save a randomly initialised tiny BERT encoder and its tokenizer into ``directory``.

    ``extra_words`` extend the vocabulary (e.g. the source markers' words).
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = [*VOCAB, *extra_words]
    BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(str(directory))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(str(directory))
    return directory

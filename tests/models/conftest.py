"""Fixtures for the model tests: a tiny BERT built in the test, synthetic labelled data.

The tiny encoder (2 layers, hidden 32, a 70-word vocabulary) trains in seconds, so the
training loop, the artifact format and the engine are all tested on real torch/peft code
without the real encoder; the few tests on the bundled all-MiniLM-L6-v2 are marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models.tiny import build_tiny_base, make_rows, write_csv


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT encoder directory usable as ``base``."""
    return build_tiny_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic ``text,label`` CSV of 400 rows."""
    return write_csv(tmp_path_factory.mktemp("data") / "synthetic.csv", make_rows(400, seed=1))


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path,
                  tiny_data: Path) -> Path:
    """A LoRA artifact trained for a few epochs on the tiny base and synthetic data."""
    from models.train import TrainConfig, train

    output = tmp_path_factory.mktemp("artifacts") / "lora"
    config = TrainConfig(data=[str(tiny_data)], base=str(tiny_base), method="lora", epochs=4,
                         lr=5e-3, head_lr=1e-2, batch_size=16, max_length=32, lora_r=4,
                         lora_alpha=8, patience=6, progress=False, autocast="off")
    train(config, output, device="cpu")
    return output

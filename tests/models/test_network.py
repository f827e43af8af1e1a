"""Loading the base encoder."""

from __future__ import annotations

from pathlib import Path

import torch

from models.network import load_encoder


def test_a_half_precision_checkpoint_loads_in_float32(tiny_base: Path, tmp_path: Path) -> None:
    encoder, tokenizer = load_encoder(str(tiny_base))
    encoder.half().save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    loaded, _ = load_encoder(str(tmp_path))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    original, _ = load_encoder(str(tiny_base))
    for a, b in zip(loaded.parameters(), original.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)

"""Artifact save/load on a tiny BERT: round trips, merging, corruption and mismatch errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from finpulse.errors import ConfigError, ModelError
from models.artifact import load_classifier, read_manifest, save_artifact
from models.config import TrainConfig
from models.network import SentimentClassifier, count_parameters, load_encoder
from models.train import apply_method
from tests.models.tiny import build_tiny_base


def _saved(tmp_path: Path, base: Path, method: str) -> tuple[SentimentClassifier, Path]:
    """A classifier with non-trivial adapter weights, saved as an artifact."""
    torch.manual_seed(1)
    encoder, _ = load_encoder(str(base))
    config = TrainConfig(base=str(base), method=method, lora_r=4)
    model = SentimentClassifier(apply_method(encoder, config), 3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name or "ia3_" in name:
                # LoRA B starts at zero and IA3 at one (no-ops); move them away from that.
                parameter.add_(torch.randn_like(parameter) * 0.2)
    model.eval()
    trainable, total = count_parameters(model)
    directory = tmp_path / method
    save_artifact(directory, model, base=str(base), method=method, max_length=32,
                  trainable_params=trainable, total_params=total)
    return model, directory


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[2, 10, 11, 30, 3, 0], [2, 20, 40, 41, 42, 3]])
    return ids, (ids != 0).long()


@pytest.mark.parametrize("method", ["lora", "ia3", "full"])
def test_round_trip_and_merge_give_the_same_logits(tmp_path: Path, tiny_base: Path,
                                                   method: str) -> None:
    model, directory = _saved(tmp_path, tiny_base, method)
    ids, mask = _batch()
    with torch.no_grad():
        expected = model(ids, mask)
        unmerged, _, _ = load_classifier(directory, merge=False)
        merged, _, manifest = load_classifier(directory, merge=True)
        assert torch.equal(unmerged(ids, mask), expected)
        torch.testing.assert_close(merged(ids, mask), expected, atol=1e-5, rtol=1e-4)
    assert manifest["method"] == method
    if method != "full":
        # Merging removes every adapter module: plain Linear layers again.
        assert not any("lora_" in n or "ia3_" in n for n, _ in merged.named_parameters())
        assert (directory / "adapter" / "adapter_model.safetensors").is_file()
        assert not (directory / "encoder.safetensors").exists()


def test_manifest_has_what_the_registry_stores(tmp_path: Path, tiny_base: Path) -> None:
    _, directory = _saved(tmp_path, tiny_base, "lora")
    manifest = read_manifest(directory)
    for key in ("version", "created", "base", "method", "metrics", "trainable_params"):
        assert key in manifest
    assert manifest["version"].startswith(f"{tiny_base.name.lower()}-lora-")
    assert 0 < manifest["trainable_params"] < manifest["total_params"]
    adapter_config = json.loads((directory / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_base)


def test_corrupt_or_missing_files_are_model_errors(tmp_path: Path, tiny_base: Path) -> None:
    _, directory = _saved(tmp_path, tiny_base, "lora")
    weights = directory / "adapter" / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    with pytest.raises(ModelError, match="adapter_model.safetensors is corrupt"):
        load_classifier(directory)
    weights.write_bytes(original)
    (directory / "head.safetensors").unlink()
    with pytest.raises(ModelError, match="missing artifact file head.safetensors"):
        load_classifier(directory)
    with pytest.raises(ModelError, match="cannot load lora weights"):
        load_classifier(directory, verify=False)
    (directory / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="corrupt manifest"):
        read_manifest(directory)
    with pytest.raises(ModelError, match="not a model artifact"):
        read_manifest(tmp_path / "nowhere")


def test_manifest_missing_keys_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"format": 1, "version": "x"}', encoding="utf-8")
    with pytest.raises(ModelError, match="missing created"):
        read_manifest(tmp_path)


def test_artifact_on_another_base_is_a_model_error(tmp_path: Path, tiny_base: Path) -> None:
    _, directory = _saved(tmp_path, tiny_base, "lora")
    other = build_tiny_base(tmp_path / "wider", hidden=48)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["base"] = str(other)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="hidden_size 32 != 48"):
        load_classifier(directory)
    # Without the fingerprint the weights themselves do not fit: still a ModelError.
    del manifest["base_fingerprint"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="cannot load lora weights"):
        load_classifier(directory)


def test_missing_base_is_a_model_error(tmp_path: Path, tiny_base: Path) -> None:
    base = shutil.copytree(tiny_base, tmp_path / "moved")
    _, directory = _saved(tmp_path, base, "ia3")
    shutil.rmtree(base)
    with pytest.raises(ModelError, match="cannot load base encoder"):
        load_classifier(directory)


def test_unknown_target_modules_are_a_config_error(tiny_base: Path) -> None:
    encoder, _ = load_encoder(str(tiny_base))
    with pytest.raises(ConfigError) as caught:
        apply_method(encoder, TrainConfig(method="lora", lora_targets=["no_such_layer"]))
    assert caught.value.field == "lora_targets"

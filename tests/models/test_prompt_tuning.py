"""Prompt tuning and P-tuning: pooling past the virtual tokens, training, the artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finpulse.errors import ConfigError
from finpulse.schemas import LABELS
from models.artifact import load_classifier, read_manifest
from models.config import DEFAULT_LR, TrainConfig
from models.inference import SentimentEngine
from models.network import SentimentClassifier, load_encoder, mean_pool, virtual_tokens
from models.onnx_backend import onnxruntime_available
from models.train import apply_method, train
from tests.models.tiny import make_rows


def test_mean_pool_drops_leading_virtual_positions() -> None:
    torch.manual_seed(0)
    virtual, length = 3, 4
    hidden = torch.randn(2, virtual + length, 5)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    pooled = mean_pool(hidden, mask)
    assert pooled.shape == (2, 5)
    assert torch.allclose(pooled[0], hidden[0, virtual:].mean(dim=0), atol=1e-6)
    # Padding is masked out, and so are the virtual positions in front of it.
    assert torch.allclose(pooled[1], hidden[1, virtual:virtual + 2].mean(dim=0), atol=1e-6)


def test_mean_pool_rejects_fewer_positions_than_the_mask() -> None:
    with pytest.raises(ValueError, match="fewer than the attention mask"):
        mean_pool(torch.zeros(1, 3, 4), torch.ones(1, 5))


@pytest.mark.parametrize("method", ["prompt", "ptuning"])
def test_prompt_wrapped_encoder_adds_virtual_positions_and_the_head_sees_text_only(
        tiny_base: Path, method: str) -> None:
    encoder, _ = load_encoder(str(tiny_base))
    config = TrainConfig(base=str(tiny_base), method=method, prompt_tokens=5, max_length=32)
    wrapped = apply_method(encoder, config)
    assert virtual_tokens(wrapped) == 5
    model = SentimentClassifier(wrapped, len(LABELS))
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    hidden = wrapped(input_ids=ids, attention_mask=mask).last_hidden_state
    assert hidden.shape[:2] == (2, 5 + 5)
    assert model(ids, mask).shape == (2, len(LABELS))
    # Only the prompt (and, outside the encoder, the head) trains.
    trainable = [name for name, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("prompt_encoder" in name for name in trainable)


def test_prompt_starts_from_the_init_texts_word_embeddings(tiny_base: Path) -> None:
    encoder, tokenizer = load_encoder(str(tiny_base))
    words = encoder.get_input_embeddings().weight.detach().clone()
    config = TrainConfig(base=str(tiny_base), method="prompt", prompt_tokens=3,
                         prompt_init="profit loss", max_length=32)
    wrapped = apply_method(encoder, config)
    table = wrapped.prompt_encoder["default"].embedding.weight
    ids = tokenizer("profit loss", add_special_tokens=False)["input_ids"]
    expected = words[[ids[0], ids[1], ids[0]]]
    assert torch.allclose(table.detach(), expected)


def test_prompt_and_max_length_must_fit_the_positions(tiny_base: Path) -> None:
    encoder, _ = load_encoder(str(tiny_base))  # 64 positions
    config = TrainConfig(base=str(tiny_base), method="prompt", prompt_tokens=40, max_length=32)
    with pytest.raises(ConfigError, match="exceeds the encoder's 64 positions") as info:
        apply_method(encoder, config)
    assert info.value.field == "prompt_tokens"


def test_prompt_tuning_has_a_large_default_learning_rate() -> None:
    assert TrainConfig(method="prompt").encoder_lr == DEFAULT_LR["prompt"] >= 3e-2
    with pytest.raises(ConfigError, match="prompt_tokens"):
        TrainConfig(method="prompt", prompt_tokens=0)


@pytest.fixture(scope="module")
def prompt_artifacts(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path,
                     tiny_data: Path) -> dict[str, Path]:
    out = {}
    for method in ("prompt", "ptuning"):
        output = tmp_path_factory.mktemp("prompt") / method
        config = TrainConfig(data=[str(tiny_data)], base=str(tiny_base), method=method,
                             epochs=2, batch_size=16, max_length=32, prompt_tokens=4,
                             progress=False, autocast="off")
        train(config, output, device="cpu")
        out[method] = output
    return out


@pytest.mark.parametrize("method", ["prompt", "ptuning"])
def test_a_prompt_artifact_trains_saves_and_loads_through_the_engine(
        prompt_artifacts: dict[str, Path], method: str) -> None:
    directory = prompt_artifacts[method]
    manifest = read_manifest(directory)
    assert manifest["method"] == method
    assert manifest["virtual_tokens"] == 4
    assert 0.0 <= manifest["metrics"]["test_macro_f1"] <= 1.0
    # Only the prompt (P-tuning: its MLP) and the head were trained, not the encoder.
    head = (32 + 1) * len(LABELS)
    if method == "prompt":
        assert manifest["trainable_params"] == 4 * 32 + head
    assert manifest["trainable_params"] < manifest["total_params"]
    engine = SentimentEngine.load(directory, device="cpu", dtype="float32")
    # The virtual tokens take positions: a chunk may hold 64 - 4 tokens.
    assert engine.max_length == 60
    texts = [text for text, _ in make_rows(12, seed=5)]
    probabilities = engine.predict_proba(texts)
    assert probabilities.shape == (12, len(LABELS))
    assert torch.allclose(torch.from_numpy(probabilities).sum(dim=1), torch.ones(12), atol=1e-5)


@pytest.mark.parametrize("method", ["prompt", "ptuning"])
def test_a_saved_prompt_model_gives_the_same_logits_after_loading(
        tmp_path: Path, tiny_base: Path, method: str) -> None:
    # P-tuning trains an MLP that makes the prompt; the artifact stores the prompt it makes,
    # and the loaded model must read exactly that prompt.
    from models.artifact import save_artifact

    encoder, tokenizer = load_encoder(str(tiny_base))
    config = TrainConfig(base=str(tiny_base), method=method, prompt_tokens=4, max_length=32)
    torch.manual_seed(3)
    model = SentimentClassifier(apply_method(encoder, config), len(LABELS)).eval()
    with torch.no_grad():  # move the prompt off its starting point, as training would
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    batch = tokenizer(["profit the company", "loss"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        before = model(batch["input_ids"], batch["attention_mask"])
    save_artifact(tmp_path, model, base=str(tiny_base), method=method, max_length=32,
                  trainable_params=1, total_params=2)
    loaded, _, _ = load_classifier(tmp_path)
    with torch.inference_mode():
        after = loaded(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.skipif(not onnxruntime_available(), reason="needs onnxruntime")
def test_the_onnx_backend_refuses_a_prompt_model_in_one_line(
        prompt_artifacts: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="onnx cannot run a prompt model"):
        SentimentEngine.load(prompt_artifacts["prompt"], device="cpu", dtype="int8")


def test_retraining_continues_a_prompt_model_and_restarts_a_ptuning_one(
        prompt_artifacts: dict[str, Path], tiny_base: Path) -> None:
    from models.continual import warm_start

    config = TrainConfig(base=str(tiny_base), method="prompt", prompt_tokens=4, max_length=32)
    started = warm_start(prompt_artifacts["prompt"], config)
    assert started is not None
    trainable = {name for name, p in started[0].named_parameters() if p.requires_grad}
    assert trainable == {"encoder.prompt_encoder.default.embedding.weight", "head.weight",
                         "head.bias"}
    ptuning = TrainConfig(base=str(tiny_base), method="ptuning", prompt_tokens=4, max_length=32)
    assert warm_start(prompt_artifacts["ptuning"], ptuning) is None

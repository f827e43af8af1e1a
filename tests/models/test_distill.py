"""Distillation into a shallower student: the loss, cutting blocks, and real tiny runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from finpulse.errors import ConfigError, ModelError
from models.artifact import load_classifier
from models.config import TrainConfig
from models.inference import SentimentEngine
from models.network import keep_layers, load_encoder, student_layers
from models.train import distill_loss, train
from tests.models.tiny import make_rows, write_csv


def test_distill_loss_is_zero_when_the_student_matches_the_teacher() -> None:
    logits = torch.tensor([[2.0, 0.1, -1.0], [0.0, 0.5, 0.3]])
    teacher = logits.softmax(-1)
    for temperature in (1.0, 2.0, 4.0):
        assert distill_loss(logits, teacher, temperature).abs().max().item() < 1e-5
    other = torch.tensor([[-1.0, 0.1, 2.0], [0.0, 0.5, 0.3]])
    loss = distill_loss(other, teacher, 2.0)
    assert loss.shape == (2,)
    assert loss[0].item() > 0.1 and abs(loss[1].item()) < 1e-5


def test_distill_loss_pulls_the_student_towards_the_teacher() -> None:
    teacher = torch.tensor([[0.7, 0.2, 0.1]])
    logits = torch.zeros(1, 3, requires_grad=True)
    for _ in range(300):
        loss = distill_loss(logits, teacher, 1.0).sum()
        (grad,) = torch.autograd.grad(loss, logits)
        logits = (logits - 0.5 * grad).detach().requires_grad_(True)
    assert torch.allclose(logits.softmax(-1), teacher, atol=1e-3)


@pytest.mark.parametrize("values", [
    {"student_layers": []}, {"student_layers": [2, 1]}, {"student_layers": [0, 0]},
    {"student_layers": [-1]}, {"student_layers": "0,1"}, {"distill_weight": 1.5},
    {"distill_temperature": 0}, {"student_init": "teacher"},
    {"student_init": "teacher", "teacher": ["t"], "method": "ia3"}, {"teacher": [""]},
])
def test_bad_distillation_options_name_their_field(values: dict) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**values)
    assert caught.value.field in values


def test_cut_blocks_compose_and_are_recorded(tiny_base: Path) -> None:
    encoder, _ = load_encoder(str(tiny_base))
    assert student_layers(encoder) is None
    second = encoder.encoder.layer[1]
    keep_layers(encoder, [1])
    assert encoder.config.num_hidden_layers == 1 and encoder.encoder.layer[0] is second
    assert student_layers(encoder) == [1]
    keep_layers(encoder, [0])  # block 0 of what is left is the base's block 1
    assert student_layers(encoder) == [1]
    with pytest.raises(ConfigError, match="student_layers"):
        keep_layers(encoder, [1])


def _config(data: Path, base: Path, **values: object) -> TrainConfig:
    common: dict = dict(data=[str(data)], base=str(base), batch_size=16, max_length=32,
                        progress=False, autocast="off", patience=10)
    return TrainConfig(**{**common, **values})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, tiny_data: Path) -> Path:
    """A full fine-tune of the tiny base that learned the keywords well."""
    output = tmp_path_factory.mktemp("distill") / "teacher"
    train(_config(tiny_data, tiny_base, method="full", epochs=8, lr=5e-3, head_lr=1e-2),
          output, device="cpu")
    return output


def test_a_student_keeps_its_blocks_through_the_artifact(
        tmp_path: Path, tiny_base: Path, tiny_data: Path, teacher: Path) -> None:
    manifest = train(_config(tiny_data, tiny_base, method="full", epochs=2, lr=5e-3,
                             student_layers=[1], teacher=[str(teacher)]),
                     tmp_path / "student", device="cpu")
    assert manifest["student_layers"] == [1]
    assert manifest["base_fingerprint"]["num_hidden_layers"] == 1
    assert manifest["teachers"] == [json.loads((teacher / "manifest.json").read_text())["version"]]
    # Scored as served (the int8 graph on a CPU) and in fp32 beside it.
    metrics = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert metrics["test_fp32"]["n"] == metrics["test"]["n"] == manifest["metrics"]["test_n"]
    model, _, _ = load_classifier(tmp_path / "student")
    assert len(model.encoder.encoder.layer) == 1
    texts = [text for text, _ in make_rows(40, seed=5)]
    torch_probs = SentimentEngine.load(tmp_path / "student", backend="torch",
                                       dtype="float32").predict_proba(texts)
    onnx_probs = SentimentEngine.load(tmp_path / "student", backend="onnx",
                                      dtype="float32").predict_proba(texts)
    assert np.abs(torch_probs - onnx_probs).max() < 1e-4

    # Started from the student (its one block is the base's block 1): still block 1.
    again = train(_config(tiny_data, tiny_base, method="full", epochs=1, lr=5e-3,
                          student_layers=[0], teacher=[str(tmp_path / "student")],
                          student_init="teacher"), tmp_path / "grandchild", device="cpu")
    assert again["student_layers"] == [1]

    # Without its blocks list the manifest no longer fits the stored weights.
    file = tmp_path / "student" / "manifest.json"
    values = json.loads(file.read_text())
    del values["student_layers"]
    file.write_text(json.dumps(values))
    with pytest.raises(ModelError, match="num_hidden_layers"):
        load_classifier(tmp_path / "student")


def test_the_teacher_not_the_labels_decides_at_full_distill_weight(
        tmp_path: Path, tiny_base: Path, tiny_data: Path, teacher: Path) -> None:
    rows = make_rows(400, seed=1)
    labels = [label for _, label in rows]
    random.Random(0).shuffle(labels)
    shuffled = write_csv(tmp_path / "shuffled.csv",
                         [(text, label) for (text, _), label in zip(rows, labels)])
    options = dict(method="full", epochs=8, lr=5e-3, head_lr=1e-2, student_layers=[0])
    train(_config(shuffled, tiny_base, teacher=[str(teacher)], distill_weight=1.0, **options),
          tmp_path / "distilled", device="cpu")
    train(_config(shuffled, tiny_base, **options), tmp_path / "labels_only", device="cpu")
    texts = [text for text, _ in make_rows(300, seed=9)]

    def labels_of(path: Path) -> np.ndarray:
        engine = SentimentEngine.load(path, backend="torch", dtype="float32")
        return engine.predict_proba(texts).argmax(axis=1)

    reference = labels_of(teacher)
    distilled = float((labels_of(tmp_path / "distilled") == reference).mean())
    shuffled_only = float((labels_of(tmp_path / "labels_only") == reference).mean())
    assert distilled >= 0.9
    assert distilled > shuffled_only + 0.15


def test_a_lora_student_starts_from_the_teachers_adapter_on_the_blocks_it_keeps(
        tmp_path: Path, tiny_base: Path, tiny_data: Path, tiny_artifact: Path,
        teacher: Path) -> None:
    from safetensors.torch import load_file

    # A learning rate of ~0: the student is the teacher cut to its block 1, unchanged.
    manifest = train(_config(tiny_data, tiny_base, method="lora", epochs=1, lr=1e-12,
                             head_lr=1e-12, student_layers=[1], teacher=[str(tiny_artifact)],
                             student_init="teacher"), tmp_path / "student", device="cpu")
    assert manifest["method"] == "lora" and manifest["student_layers"] == [1]
    adapter = "adapter/adapter_model.safetensors"
    before = load_file(str(tiny_artifact / adapter))
    after = load_file(str(tmp_path / "student" / adapter))
    assert after and all(".layer.0." in name for name in after)
    for name, tensor in after.items():
        torch.testing.assert_close(tensor, before[name.replace(".layer.0.", ".layer.1.")])
    cut, tokenizer, cut_manifest = load_classifier(tiny_artifact)
    keep_layers(cut.encoder, [1])
    texts = [text for text, _ in make_rows(30, seed=4)]
    reference = SentimentEngine(cut, tokenizer, cut_manifest, device=torch.device("cpu"),
                                dtype=torch.float32, max_length=32,
                                batch_tokens=4096).predict_proba(texts)
    loaded = SentimentEngine.load(tmp_path / "student", backend="torch", dtype="float32")
    assert np.abs(loaded.predict_proba(texts) - reference).max() < 1e-5

    # The full fine-tune has no adapter to continue.
    with pytest.raises(ConfigError, match="LoRA teacher"):
        train(_config(tiny_data, tiny_base, method="lora", epochs=1, student_layers=[0],
                      teacher=[str(teacher)], student_init="teacher"),
              tmp_path / "from_full", device="cpu")

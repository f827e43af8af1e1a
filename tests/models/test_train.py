"""The training loop on a tiny BERT: loss goes down, the artifact is complete, errors are clear."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from finpulse.errors import ConfigError, DataError
from models.artifact import read_manifest
from models.config import TrainConfig
from models.inference import SentimentEngine
from models.train import class_weights, train
from tests.models.tiny import make_rows, write_csv


def test_lora_training_lowers_the_loss_and_writes_a_complete_artifact(
    tiny_artifact: Path, tiny_data: Path
) -> None:
    epochs = [json.loads(line) for line in (tiny_artifact / "epochs.jsonl").read_text().splitlines()]
    assert len(epochs) >= 2
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    for name in ("manifest.json", "train_config.json", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "head.safetensors", "split.csv",
                 "metrics.json", "confusion.png", "MODEL_CARD.md"):
        assert (tiny_artifact / name).is_file(), name
    manifest = read_manifest(tiny_artifact)
    assert manifest["method"] == "lora"
    assert set(manifest["metrics"]) >= {"test_accuracy", "test_macro_f1", "test_ece"}
    assert TrainConfig.from_file(tiny_artifact / "train_config.json").lora_r == 4
    metrics = json.loads((tiny_artifact / "metrics.json").read_text())
    assert metrics["test"]["n"] == manifest["metrics"]["test_n"]
    assert 35 <= metrics["test"]["n"] <= 45  # 10% of ~400 unique rows, rounded per stratum
    assert "synthetic" in metrics["test_by_source"]
    card = (tiny_artifact / "MODEL_CARD.md").read_text()
    assert manifest["version"] in card and "Intended use" in card and "Limits" in card


def test_split_file_never_puts_a_test_row_in_training(tiny_artifact: Path, tiny_data: Path) -> None:
    with (tiny_artifact / "split.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    splits = {row["key"]: row["split"] for row in rows}
    assert len(splits) == len(rows)
    assert {row["split"] for row in rows} == {"train", "validation", "test"}
    text = tiny_data.read_text()
    assert not any(row["key"] in text for row in rows)


def test_trained_artifact_predicts_in_input_order(tiny_artifact: Path) -> None:
    engine = SentimentEngine.load(tiny_artifact, device="cpu", dtype="float32")
    texts = [text for text, _ in make_rows(30, seed=9)]
    together = engine.predict(texts)
    alone = [engine.predict([text])[0] for text in texts]
    for a, b in zip(together, alone):
        assert a.label == b.label
        assert a.score == pytest.approx(b.score, abs=1e-5)


@pytest.mark.parametrize("method", ["ia3", "full"])
def test_other_methods_train_and_load(tmp_path: Path, tiny_base: Path, tiny_data: Path,
                                      method: str) -> None:
    config = TrainConfig(data=[str(tiny_data)], base=str(tiny_base), method=method, epochs=1,
                         batch_size=32, max_length=32, progress=False, autocast="off")
    manifest = train(config, tmp_path / method, device="cpu")
    assert manifest["method"] == method
    weights = "encoder.safetensors" if method == "full" else "adapter/adapter_model.safetensors"
    assert weights in manifest["files"]
    if method == "full":
        assert manifest["trainable_params"] == manifest["total_params"]
    engine = SentimentEngine.load(tmp_path / method, device="cpu")
    assert engine.info["method"] == method
    assert len(engine.predict(["profit rise", "loss"])) == 2


def test_existing_artifact_is_not_overwritten(tiny_artifact: Path, tiny_data: Path) -> None:
    with pytest.raises(ConfigError, match="already holds a model") as caught:
        train(TrainConfig(data=[str(tiny_data)]), tiny_artifact)
    assert caught.value.field == "output"


def test_training_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data files"):
        train(TrainConfig(data=[]), tmp_path / "a")
    one_class = write_csv(tmp_path / "one.csv", [(f"text {i}", "neutral") for i in range(50)])
    with pytest.raises(DataError, match="fewer than two classes"):
        train(TrainConfig(data=[str(one_class)]), tmp_path / "b")


def test_class_weights_favour_rare_classes() -> None:
    labels = ["neutral"] * 60 + ["positive"] * 25 + ["negative"] * 15
    balanced = class_weights(labels, "balanced")
    sqrt = class_weights(labels, "sqrt")
    assert balanced[0] > balanced[2] > balanced[1]  # LABELS order: negative, neutral, positive
    assert balanced.mean().item() == pytest.approx(1.0)
    assert balanced[0] / balanced[1] > sqrt[0] / sqrt[1] > 1.0
    assert class_weights(labels, "none").tolist() == [1.0, 1.0, 1.0]


def test_training_keeps_the_smoothed_int8_graph_only_within_tolerance(
        tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report scores the smoothed int8 graph against fp32 on the test split, at each
    weight width this CPU computes exactly, and records each choice; past the tolerance it
    scores (and the engine serves) the fp32-down graph."""
    import shutil

    from models import train as train_module
    from models.data import Example
    from models.onnx_backend import exact_weight_bits, int8_weight_bits

    manifest = read_manifest(tiny_artifact)
    widths = {str(bits) for bits in exact_weight_bits()}
    assert set(manifest["int8_smooth"]) == widths
    metrics = json.loads((tiny_artifact / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["int8_smooth"] == manifest["int8_smooth"]
    assert set(metrics["int8_smoothed"]) == widths
    fp32 = metrics["test_fp32"]["macro_f1"]
    for bits, kept in manifest["int8_smooth"].items():
        assert kept == (fp32 - metrics["int8_smoothed"][bits]["macro_f1"] <= 0.003)
    if manifest["int8_smooth"][str(int8_weight_bits())]:
        assert metrics["test"] == {**metrics["test"], **metrics["int8_smoothed"][
            str(int8_weight_bits())]}

    copy = shutil.copytree(tiny_artifact, tmp_path / "copy",
                           ignore=shutil.ignore_patterns("onnx-cache"))
    texts = ["profit rises", "loss widens", "shares flat", "record sales", "plant closes",
             "guidance cut", "dividend raised", "no change"] * 3
    labels = ["positive", "negative", "neutral"] * 8
    test = [Example(text, label, f"k{i}", ("tiny",))
            for i, (text, label) in enumerate(zip(texts, labels, strict=True))]
    monkeypatch.setattr(train_module, "INT8_TOLERANCE", -1.0)  # nothing is close enough
    report = train_module._report(copy, test, test[:6], "cpu")
    assert report["int8_smooth"] == {bits: False for bits in widths}
    assert set(report["int8_smoothed"]) == widths and report["test"]["dtype"] == "int8"

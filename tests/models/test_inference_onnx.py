"""The ONNX Runtime backend and the per-machine choice of backend, on the tiny artifact.

Tolerances: the fused fp32 graph is the same function as torch fp32 (probabilities within
1e-4, identical labels). The int8 graph quantises weights per channel and activations per
batch, so it is an approximation: on the fixed set below its labels must agree with fp32
on at least 95% of the texts and no probability may move by more than 0.15. The real
model's figures are in test_real_model_onnx.py and docs/configuration.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from finpulse.errors import ConfigError
from models import inference, onnx_backend
from models.inference import SentimentEngine, resolve_backend
from tests.models.tiny import make_rows

pytest.importorskip("onnxruntime")

CPU = torch.device("cpu")
TEXTS = [text for text, _ in make_rows(120, seed=5)] + ["", "profit " * 40]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def fp32(tiny_artifact: Path) -> SentimentEngine:
    return SentimentEngine.load(tiny_artifact, device="cpu", dtype="float32", backend="torch",
                                max_length=16, batch_tokens=256)


def _load(artifact: Path, cache: Path, dtype: str) -> SentimentEngine:
    return SentimentEngine.load(artifact, device="cpu", dtype=dtype, backend="onnx",
                                max_length=16, batch_tokens=256, cache_dir=cache)


def test_fused_fp32_graph_matches_torch(tiny_artifact: Path, cache: Path,
                                        fp32: SentimentEngine) -> None:
    engine = _load(tiny_artifact, cache, "float32")
    assert (engine.backend, engine.info["dtype"]) == ("onnx", "float32")
    got, want = engine.predict_proba(TEXTS), fp32.predict_proba(TEXTS)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_int8_graph_agrees_with_fp32_within_tolerance(tiny_artifact: Path, cache: Path,
                                                      fp32: SentimentEngine) -> None:
    engine = _load(tiny_artifact, cache, "int8")
    assert (engine.backend, engine.info["dtype"]) == ("onnx", "int8")
    got, want = engine.predict_proba(TEXTS), fp32.predict_proba(TEXTS)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95
    assert np.abs(got - want).max() <= 0.15
    # The engine's records come from the int8 probabilities, in input order.
    predictions = engine.predict(TEXTS[:5])
    assert [p.label for p in predictions] == [engine.labels[i] for i in got[:5].argmax(1)]


def test_int8_graph_is_really_quantised_and_cached(tiny_artifact: Path, cache: Path) -> None:
    import onnx

    engine = _load(tiny_artifact, cache, "int8")
    graphs = sorted(cache.glob(f"*{engine.version}*-int8-*.onnx"))
    assert len(graphs) == 1
    ops = {node.op_type for node in onnx.load(str(graphs[0])).graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "QAttention"}, ops
    assert "Attention" in ops or "QAttention" in ops  # the fused attention kernel
    before = graphs[0].stat().st_mtime_ns
    _load(tiny_artifact, cache, "int8")  # a second load reuses the cached graph
    assert graphs[0].stat().st_mtime_ns == before


def test_default_cache_lives_beside_the_artifact(tiny_artifact: Path, tmp_path: Path) -> None:
    assert onnx_backend.default_cache_dir(tiny_artifact) == tiny_artifact / "onnx-cache"
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if not __import__("os").access(read_only, __import__("os").W_OK):  # not as root
            assert onnx_backend.default_cache_dir(read_only).parts[-2:] == ("finpulse", "onnx")
    finally:
        read_only.chmod(0o700)


@pytest.mark.parametrize(("backend", "dtype", "expected"), [
    ("auto", "int8", ("onnx", "int8")),
    ("auto", "float32", ("torch", "float32")),
    ("auto", "bfloat16", ("torch", "bfloat16")),
    ("torch", "float32", ("torch", "float32")),
    ("onnx", "float32", ("onnx", "float32")),
    ("onnx", "auto", ("onnx", "int8")),
])
def test_backend_choice(backend: str, dtype: str, expected: tuple[str, str]) -> None:
    assert resolve_backend(backend, dtype, CPU) == expected


def test_auto_uses_torch_on_a_cpu() -> None:
    """Dynamic int8 makes a label depend on the batch it rides in: it is opt-in (dtype int8)."""
    backend, dtype = resolve_backend("auto", "auto", CPU)
    assert backend == "torch" and dtype in ("float32", "bfloat16")


def test_auto_on_cuda_uses_torch_in_half_precision() -> None:
    backend, _ = resolve_backend("auto", "auto", torch.device("cuda"))
    assert backend == "torch"


def test_auto_without_onnxruntime_uses_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "onnxruntime_available", lambda: False)
    assert resolve_backend("auto", "auto", CPU)[0] == "torch"
    with pytest.raises(ConfigError, match="onnxruntime"):
        resolve_backend("onnx", "auto", CPU)


@pytest.mark.parametrize(("backend", "dtype", "device", "message"), [
    ("onnx", "auto", "cuda", "CPU only"),
    ("onnx", "bfloat16", "cpu", "int8 or float32"),
    ("torch", "int8", "cpu", "int8 runs on backend onnx"),
    ("tensorrt", "auto", "cpu", "backend"),
    ("auto", "int4", "cpu", "dtype"),
])
def test_impossible_combinations_are_config_errors(backend: str, dtype: str, device: str,
                                                   message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_backend(backend, dtype, torch.device(device))


def test_settings_accept_backend_and_int8() -> None:
    from finpulse.settings import Settings

    settings = Settings.load(model={"backend": "onnx", "dtype": "int8", "cache_dir": "/tmp/x"})
    assert (settings.model.backend, settings.model.dtype) == ("onnx", "int8")
    with pytest.raises(ConfigError, match="model.backend"):
        Settings.load(model={"backend": "tpu"})


@pytest.mark.slow
def test_bundled_model_int8_agrees_with_fp32() -> None:
    """The shipped model: int8 labels agree with fp32 on >= 97% of 300 bench tweets.

    Measured: 98.4-98.7% on 1,436-2,000 texts, macro-F1 within about 0.003 (docs/configuration.md).
    """
    from models.bench import BENCH_TEXTS, read_texts

    texts = read_texts(BENCH_TEXTS, 300)
    fp32 = SentimentEngine.load(None, device="cpu", dtype="float32", backend="torch")
    int8 = SentimentEngine.load(None, device="cpu", dtype="int8", backend="onnx")
    got, want = int8.predict_proba(texts), fp32.predict_proba(texts)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.97
    assert np.abs(got - want).mean() <= 0.02

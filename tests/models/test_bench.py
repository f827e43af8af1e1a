"""``finpulse bench``'s JSON contract (DESIGN.md) on the tiny artifact; no timing asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finpulse.commands import bench
from finpulse.errors import DataError
from models.bench import read_bench_data
from models.inference import SentimentEngine
from tests.models.test_commands import run
from tests.models.tiny import make_rows, write_csv

CONTRACT = {"one_per_call", "hf_pipeline", "engine_default"}


def test_labelled_texts_give_rates_and_macro_f1_per_variant(
        tmp_path: Path, tiny_artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "texts.csv", make_rows(40, seed=3))
    assert run(bench, ["bench", "--model", str(tiny_artifact), "--texts", str(data), "--n", "40",
                       "--naive-n", "8", "--rounds", "2", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert CONTRACT <= set(result["texts_per_s"])
    assert set(result["macro_f1"]) == set(result["texts_per_s"])
    assert all(len(rates) == 2 for rates in result["texts_per_s_rounds"].values())
    assert all(0.0 <= f1 <= 1.0 for f1 in result["macro_f1"].values())
    # fp32 variants compute the same function, so their labels (and F1) agree.
    f1 = result["macro_f1"]
    assert f1["one_per_call"] == f1["sorted_fp32"] == f1["hf_pipeline"]
    assert result["macro_f1_delta_vs_fp32"]["sorted_fp32"] == 0.0
    assert result["speedup_vs_hf_pipeline"]["hf_pipeline"] == 1.0
    assert result["default_backend"] in ("torch", "onnx")
    # On the CPU the onnx default scores one batch per thread at once.
    assert result["default_workers"] == (result["threads"] if result["default_backend"] == "onnx"
                                         else 1)
    if result["default_dtype"] == "int8":
        assert result["default_int8"]["weight_bits"] in (7, 8)


def test_unlabelled_texts_give_rates_only(tmp_path: Path, tiny_artifact: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "plain.csv"
    data.write_text("text\nprofit rise\nloss plunge\nthe board said\n", encoding="utf-8")
    assert run(bench, ["bench", "--model", str(tiny_artifact), "--data", str(data),
                       "--naive-n", "2", "--rounds", "1", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert CONTRACT <= set(result["texts_per_s"])
    assert "macro_f1" not in result


def test_bench_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_bench_data(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("body\nhello\n", encoding="utf-8")
    with pytest.raises(DataError, match="no 'text' column"):
        read_bench_data(bad)


def test_a_baseline_model_runs_the_naive_variants(
        tmp_path: Path, tiny_base: Path, tiny_data: Path, tiny_artifact: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A distilled student benched against its teacher: the naive variants are the teacher's,
    ``default_fp32`` is the student's own fp32 run, and each F1 is its own model's."""
    from models.artifact import read_manifest
    from models.config import TrainConfig
    from models.train import train

    student = tmp_path / "student"
    train(TrainConfig(data=[str(tiny_data)], base=str(tiny_base), method="full", epochs=1,
                      batch_size=16, max_length=32, student_layers=[1],
                      teacher=[str(tiny_artifact)], progress=False, autocast="off"),
          student, device="cpu")
    data = write_csv(tmp_path / "texts.csv", make_rows(40, seed=3))
    assert run(bench, ["bench", "--model", str(student), "--baseline", str(tiny_artifact),
                       "--texts", str(data), "--n", "40", "--naive-n", "8", "--rounds", "1",
                       "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_version"] == read_manifest(student)["version"]
    assert result["baseline_version"] == read_manifest(tiny_artifact)["version"]
    f1 = result["macro_f1"]
    assert f1["one_per_call"] == f1["hf_pipeline"] == f1["sorted_fp32"]
    assert "default_fp32" in result["texts_per_s"]
    assert result["engine_default_delta_vs_its_fp32"] == pytest.approx(
        f1["engine_default"] - f1["default_fp32"], abs=1e-4)
    # The teacher's labels and the one-block student's are not the same function.
    texts = [text for text, _ in make_rows(40, seed=3)]
    teacher = SentimentEngine.load(tiny_artifact, backend="torch", dtype="float32")
    own = SentimentEngine.load(student, backend="torch", dtype="float32")
    assert not np.allclose(teacher.predict_proba(texts), own.predict_proba(texts))

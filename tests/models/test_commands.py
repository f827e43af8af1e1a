"""``finpulse train``, ``eval`` and ``bench`` handlers, run through their own argparse parsers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from finpulse.commands import bench, evaluate
from finpulse.commands import train as train_command
from finpulse.errors import ConfigError, DataError, ModelError
from finpulse.settings import Settings
from models.inference import cpu_supports_bf16
from tests.models.tiny import make_rows, write_csv

CONTRACT = {"n", "accuracy", "macro_f1", "weighted_f1", "per_class", "confusion", "ece",
            "texts_per_s", "model_version"}


def run(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args, Settings())


def test_eval_json_has_the_contract_fields(tiny_artifact: Path, tiny_data: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run(evaluate, ["eval", "--data", str(tiny_data), "--model", str(tiny_artifact),
                          "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert CONTRACT <= set(report)
    assert report["n"] == 400
    assert set(report["per_class"]) == {"negative", "neutral", "positive"}
    assert set(report["per_class"]["neutral"]) == {"precision", "recall", "f1", "support"}
    assert sum(map(sum, report["confusion"])) == 400
    assert report["train_overlap"] > 0  # the file includes the training rows: flagged


def test_eval_split_test_scores_only_held_out_rows(
    tiny_artifact: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(evaluate, ["eval", "--data", str(tiny_data), "--model", str(tiny_artifact),
                   "--split", "test", "--json"])
    report = json.loads(capsys.readouterr().out)
    manifest = json.loads((tiny_artifact / "manifest.json").read_text())
    assert report["n"] == manifest["metrics"]["test_n"]
    assert report["train_overlap"] == 0
    assert report["accuracy"] == pytest.approx(manifest["metrics"]["test_accuracy"], abs=0.03)


def test_eval_split_counts_a_text_in_two_files_once(
    tiny_artifact: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy.csv"
    copy.write_bytes(tiny_data.read_bytes())
    run(evaluate, ["eval", "--data", str(tiny_data), "--data", str(copy), "--model",
                   str(tiny_artifact), "--split", "test", "--json"])
    manifest = json.loads((tiny_artifact / "manifest.json").read_text())
    assert json.loads(capsys.readouterr().out)["n"] == manifest["metrics"]["test_n"]


def test_eval_human_table(tiny_artifact: Path, tiny_data: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    run(evaluate, ["eval", "--data", str(tiny_data), "--model", str(tiny_artifact)])
    out = capsys.readouterr().out
    assert "macro-F1" in out and "confusion" in out and "neutral" in out


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, DataError, "data file not found"),
        ("sentence,label\nx,positive\n", DataError, "missing column(s) text"),
        ("text,label\nx,bullish\n", DataError, "unknown label 'bullish'"),
        ("text,label\nx,positive\n,neutral\n", DataError, "empty text"),
    ],
)
def test_eval_bad_data(tmp_path: Path, tiny_artifact: Path, content: str | None,
                       error: type[Exception], message: str) -> None:
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(evaluate, ["eval", "--data", str(path), "--model", str(tiny_artifact), "--json"])


def test_eval_missing_model(tmp_path: Path, tiny_data: Path) -> None:
    with pytest.raises(ModelError, match="not a model artifact"):
        run(evaluate, ["eval", "--data", str(tiny_data), "--model", str(tmp_path)])


def test_eval_split_without_overlap_is_an_error(tmp_path: Path, tiny_artifact: Path) -> None:
    other = write_csv(tmp_path / "other.csv", [("brand new sentence", "neutral")])
    with pytest.raises(DataError, match="test split"):
        run(evaluate, ["eval", "--data", str(other), "--model", str(tiny_artifact),
                       "--split", "test"])


def test_bench_json(tmp_path: Path, tiny_artifact: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "texts.csv", make_rows(60, seed=2))
    assert run(bench, ["bench", "--model", str(tiny_artifact), "--data", str(data), "--n", "60",
                       "--naive-n", "10", "--rounds", "1", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 60
    assert {"one_per_call", "hf_pipeline", "fixed_batches_fp32", "unmerged_sorted_fp32",
            "sorted_fp32", "engine_default"} <= set(result["texts_per_s"])
    # bf16 only where the CPU has bf16 units (elsewhere torch emulates it, slowly).
    assert ("sorted_bf16" in result["texts_per_s"]) == cpu_supports_bf16()
    assert all(rate > 0 for rate in result["texts_per_s"].values())
    assert result["speedup_vs_one_per_call"]["one_per_call"] == 1.0


def test_train_command_trains_and_validates(tmp_path: Path, tiny_base: Path, tiny_data: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(f"base: {tiny_base}\nmax_length: 32\nautocast: 'off'\n", encoding="utf-8")
    out = tmp_path / "model"
    assert run(train_command, ["train", "--data", str(tiny_data), "--output", str(out),
                               "--train-config", str(config), "--method", "ia3",
                               "--epochs", "1", "--no-progress", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["version"].startswith(f"{tiny_base.name.lower()}-ia3-")
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["method"] == "ia3" and saved["max_length"] == 32 and saved["epochs"] == 1
    with pytest.raises(ConfigError) as caught:
        run(train_command, ["train", "--data", str(tiny_data), "--output", str(tmp_path / "x"),
                            "--epochs", "0"])
    assert caught.value.field == "epochs"
    with pytest.raises(ConfigError, match="--data"):
        run(train_command, ["train", "--output", str(tmp_path / "y")])

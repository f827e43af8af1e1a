"""The research sweep's configuration logic (scripts/research_sweep.py): sets, the few-shot
curve's expansion, merging and the one-line errors. Training itself is the smoke command."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from finpulse.errors import ConfigError
from models.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep() -> ModuleType:
    spec = importlib.util.spec_from_file_location("research_sweep",
                                                  ROOT / "scripts" / "research_sweep.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_sets_expand_to_valid_train_configs(sweep: ModuleType) -> None:
    for name in ("default", "tiny"):
        chosen = sweep.load_set(sweep.DEFAULT_FILE, name)
        for cuda in (False, True):
            for fields in sweep.expand_runs(chosen).values():
                config, extra = sweep.run_config(chosen, fields, cuda=cuda, base=None)
                TrainConfig.from_dict(config)
                assert set(extra) <= sweep.RUN_KEYS


def test_the_default_set_has_every_method_and_the_whole_few_shot_curve(sweep: ModuleType) -> None:
    runs = sweep.expand_runs(sweep.load_set(sweep.DEFAULT_FILE, "default"))
    assert {"lora", "full", "full_llrd", "ia3", "prompt", "lora_ls", "lora_rdrop",
            "lora_source", "lora_6ep", "full_moredata"} <= set(runs)
    curve = [name for name in runs if name.startswith("fs_")]
    assert len(curve) == 2 * 4 * 3
    assert runs["fs_prompt_32_s2"]["method"] == "prompt"
    assert runs["fs_prompt_32_s2"]["shots"] == 32 and runs["fs_prompt_32_s2"]["seed"] == 2
    # Size by size: both methods at 8 shots come before anything at 32.
    assert curve.index("fs_prompt_8_s3") < curve.index("fs_lora_32_s1")
    # Every full-split run keeps models/default's epochs and length unless it is about them.
    chosen = sweep.load_set(sweep.DEFAULT_FILE, "default")
    config, extra = sweep.run_config(chosen, runs["full_moredata"], cuda=True, base="/m")
    assert (config["epochs"], config["max_length"], config["base"]) == (3, 128, "/m")
    assert extra["extra_train"][0]["file"] == "extra/stockemotions.csv"


def test_bad_sets_are_refused_with_one_line(sweep: ModuleType, tmp_path: Path) -> None:
    file = tmp_path / "sweep.yaml"
    file.write_text("a:\n  split: {data: [x.csv]}\n  runz: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key\\(s\\) runz"):
        sweep.load_set(file, "a")
    with pytest.raises(ConfigError, match="no set 'b'"):
        sweep.load_set(file, "b")
    twice = {"runs": {"fs_lora_8_s1": {}},
             "fewshot": {"methods": {"lora": {}}, "shots": [8], "seeds": [1]}}
    with pytest.raises(ConfigError, match="defined twice"):
        sweep.expand_runs(twice)


def test_the_command_names_a_bad_flag_in_one_line(sweep: ModuleType, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["--out", str(tmp_path / "rows.jsonl"), "--only", "lora,nothing"]) == 1
    assert capsys.readouterr().err.strip() == ("ConfigError: --only: no run named nothing "
                                               "in set 'default'")
    assert not (tmp_path / "rows.jsonl").exists()

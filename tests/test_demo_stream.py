"""The demo's bundled stream holds only texts the shipped model never trained on."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from finpulse.services.demo import bundled_stream
from ingest.entities import TickerExtractor
from models.data import read_split, text_key

ROOT = Path(__file__).resolve().parent.parent
SPLIT = read_split(ROOT / "models" / "default" / "split.csv")
SOURCE = ROOT.parent / "shared" / "data" / "twitter_fin_train.csv"


def _script():
    spec = importlib.util.spec_from_file_location("make_demo_stream",
                                                  ROOT / "scripts" / "make_demo_stream.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records() -> list[dict[str, str]]:
    with bundled_stream().open(encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def test_every_post_is_held_out_from_the_default_model():
    records = _records()
    splits = Counter(SPLIT[text_key(r["text"])]["split"] for r in records)  # KeyError: unknown text
    assert set(splits) <= {"test", "validation"}, splits
    assert splits["test"] == 953 and splits["validation"] == 953
    assert len({r["id"] for r in records}) == len(records)
    assert [r["published_at"] for r in records] == sorted(r["published_at"] for r in records)


def test_the_uber_burst_is_packed_into_one_hour_and_the_stream_runs_on():
    records = _records()
    extractor = TickerExtractor.default()
    start = datetime.fromisoformat("2026-11-25T14:00:00+00:00")

    def at(record: dict[str, str]) -> datetime:
        return datetime.fromisoformat(record["published_at"].replace("Z", "+00:00"))

    uber = [r for r in records if "UBER" in extractor.extract(r["text"])]
    in_burst = [r for r in uber if start <= at(r) < start + timedelta(hours=1)]
    assert len(in_burst) == 10 and len(uber) == 14
    assert max(at(r) for r in records) > start + timedelta(hours=9)  # alerts close and resolve


def test_the_script_refuses_training_texts():
    script = _script()
    train_key = next(k for k, v in SPLIT.items() if v["split"] == "train")
    held = next(k for k, v in SPLIT.items() if v["split"] == "test")
    rows = [{"text": "a text the model trained on", "label": "negative"},
            {"text": "a held-out text", "label": "neutral"}]
    split = {text_key(rows[0]["text"]): {**SPLIT[train_key]},
             text_key(rows[1]["text"]): {**SPLIT[held]}}
    assert [r["text"] for r in script.held_out(rows, split)] == ["a held-out text"]
    assert [r["text"] for r in script.build(rows, split)] == ["a held-out text"]


@pytest.mark.skipif(not SOURCE.is_file(), reason=f"{SOURCE} (the Twitter set) is not here")
def test_rebuilding_gives_the_bundled_file(tmp_path):
    script = _script()
    target = tmp_path / "stream.jsonl"
    script.main(str(SOURCE), str(target))
    assert target.read_bytes() == bundled_stream().read_bytes()

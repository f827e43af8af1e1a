"""Reading labelled CSVs, deduplication across files, and the seeded stratified split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from finpulse.errors import DataError
from models.data import (
    load_dataset,
    read_labelled_csv,
    read_split,
    select_split,
    split_examples,
    text_key,
    write_split,
)
from tests.models.tiny import make_rows, write_csv


def test_reads_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [("Profit rose", "positive"), ("Sales fell", "Negative")])
    assert read_labelled_csv(path) == [("Profit rose", "positive"), ("Sales fell", "negative")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sentence,label\nx,positive\n", "missing column(s) text"),
        ("text,sentiment\nx,positive\n", "missing column(s) label"),
        ("text,label\nok,positive\nbad,bullish\n", "a.csv:3: unknown label 'bullish'"),
        ("text,label\nok,positive\n  ,neutral\n", "a.csv:3: empty text"),
        ("text,label\n", "no rows"),
        ("", "found nothing"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_labelled_csv(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_labelled_csv(tmp_path / "nope.csv")
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nSepp\xe4l\xe4,neutral\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_labelled_csv(path)


def test_dedupe_across_files_merges_sources_and_drops_conflicts(tmp_path: Path) -> None:
    a = write_csv(tmp_path / "strict.csv", [("Profit rose .", "positive"), ("Odd one", "neutral")])
    b = write_csv(tmp_path / "loose.csv", [
        ("profit  rose\u00a0.", "positive"),  # same text after normalisation
        ("Odd one", "positive"),              # conflicting label: dropped
        ("Sales fell", "negative"),
        ("Sales fell", "negative"),           # plain duplicate
    ])
    dataset = load_dataset([a, b])
    by_text = {ex.text: ex for ex in dataset.examples}
    assert set(by_text) == {"Profit rose .", "Sales fell"}
    assert by_text["Profit rose ."].sources == ("loose", "strict")
    assert by_text["Sales fell"].sources == ("loose",)
    assert dataset.conflicts == 1
    assert dataset.duplicates == 3
    assert text_key("Profit rose .") == text_key("PROFIT rose\u00a0.")


def test_split_is_seeded_disjoint_complete_and_stratified(tmp_path: Path) -> None:
    dataset = load_dataset([write_csv(tmp_path / "s.csv", make_rows(1000, seed=3))])
    split = split_examples(dataset.examples, seed=5, validation=0.1, test=0.2)
    keys = {name: {ex.key for ex in members} for name, members in split.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]
    assert sum(map(len, keys.values())) == len(dataset.examples)
    again = split_examples(list(reversed(dataset.examples)), seed=5, validation=0.1, test=0.2)
    assert {ex.key for ex in again["test"]} == keys["test"]
    other = split_examples(dataset.examples, seed=6, validation=0.1, test=0.2)
    assert {ex.key for ex in other["test"]} != keys["test"]
    everything = Counter(ex.label for ex in dataset.examples)
    test = Counter(ex.label for ex in split["test"])
    for label, count in everything.items():
        assert abs(test[label] - 0.2 * count) <= 1


def test_split_file_round_trips_without_text(tmp_path: Path) -> None:
    rows = make_rows(200, seed=4)
    data = write_csv(tmp_path / "s.csv", rows)
    split = split_examples(load_dataset([data]).examples, seed=1, validation=0.1, test=0.1)
    write_split(tmp_path / "split.csv", split)
    content = (tmp_path / "split.csv").read_text(encoding="utf-8")
    assert rows[0][0] not in content
    table = read_split(tmp_path / "split.csv")
    assert len(table) == sum(map(len, split.values()))
    test_rows = select_split(read_labelled_csv(data), table, "test")
    assert {text for text, _ in test_rows} == {ex.text for ex in split["test"]}


def test_read_split_rejects_other_files(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "x.csv", [("a", "neutral")])
    with pytest.raises(DataError, match="not a split file"):
        read_split(path)

"""The seeded, stratified few-shot sampler of the research sweep."""

from __future__ import annotations

from collections import Counter

import pytest

from finpulse.errors import DataError
from models.data import Example, few_shot_sample, text_key


def pool(per_label: dict[str, int]) -> list[Example]:
    out = []
    for label, n in per_label.items():
        for i in range(n):
            text = f"{label} text {i}"
            out.append(Example(text, label, text_key(text), ("s",)))
    return out


def test_draws_the_same_number_of_each_label() -> None:
    drawn = few_shot_sample(pool({"negative": 20, "neutral": 90, "positive": 40}), 8, seed=1)
    assert Counter(ex.label for ex in drawn) == {"negative": 8, "neutral": 8, "positive": 8}
    assert len({ex.key for ex in drawn}) == 24


def test_is_seeded_and_independent_of_input_order() -> None:
    examples = pool({"negative": 50, "neutral": 50, "positive": 50})
    first = few_shot_sample(examples, 8, seed=1)
    assert few_shot_sample(list(reversed(examples)), 8, seed=1) == first
    assert few_shot_sample(examples, 8, seed=2) != first


def test_more_shots_extend_the_smaller_draw() -> None:
    examples = pool({"negative": 50, "neutral": 50, "positive": 50})
    small = {ex.key for ex in few_shot_sample(examples, 8, seed=3)}
    large = {ex.key for ex in few_shot_sample(examples, 32, seed=3)}
    assert small < large


def test_too_few_examples_or_shots_are_refused() -> None:
    with pytest.raises(DataError, match="8 shots of 'negative' asked for; the pool has 5"):
        few_shot_sample(pool({"negative": 5, "neutral": 50, "positive": 50}), 8, seed=1)
    with pytest.raises(DataError, match="at least 1"):
        few_shot_sample(pool({"negative": 5}), 0, seed=1)

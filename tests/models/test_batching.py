"""Length-sorted token-budget batching and padding."""

from __future__ import annotations

import random

import pytest
import torch

from models.batching import budget_batches, fixed_batches, grouped_batches, pad


@pytest.mark.parametrize("sort", [True, False])
def test_budget_batches_cover_every_index_within_budget(sort: bool) -> None:
    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(500)] + [400]
    batches = budget_batches(lengths, 1024, sort=sort)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in batches:
        padded = max(lengths[i] for i in batch) * len(batch)
        assert padded <= 1024 or len(batch) == 1


def test_sorted_batches_pad_less_and_short_texts_share_big_batches() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(5, 100) for _ in range(1000)]

    def padding(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    sorted_batches = budget_batches(lengths, 2048)
    assert padding(sorted_batches) < padding(budget_batches(lengths, 2048, sort=False)) / 4
    assert len(sorted_batches[-1]) > len(sorted_batches[0])


def test_max_batch_caps_the_batch_size() -> None:
    assert max(map(len, budget_batches([4] * 100, 10_000, max_batch=16))) == 16


def test_fixed_and_grouped_batches() -> None:
    assert fixed_batches(5, 2) == [[0, 1], [2, 3], [4]]
    lengths = [random.Random(2).randint(1, 50) for _ in range(333)]
    batches = grouped_batches(lengths, 32, random.Random(3))
    assert sorted(i for b in batches for i in b) == list(range(333))
    assert batches != grouped_batches(lengths, 32, random.Random(4))


def test_pad() -> None:
    ids, mask = pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == torch.long

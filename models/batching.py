"""Batching of token sequences: length-sorted token-budget batches and padding.

Padding is wasted compute. Sorting texts by length and cutting batches by a budget of
padded tokens (rather than a fixed count of texts) keeps padding small and lets short
texts go through in large batches; that is most of the inference speed-up measured by
``finpulse bench``. Training uses the same idea with randomness kept: shuffle, sort
within large pools, cut fixed-size batches, shuffle the batches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch


def budget_batches(
    lengths: Sequence[int], batch_tokens: int, *, sort: bool = True, max_batch: int = 1024
) -> list[list[int]]:
    """Group sequence indices into batches whose padded size stays within a token budget.

    Args:
        lengths: token count of each sequence.
        batch_tokens: upper bound on ``batch size x longest sequence`` (a single sequence
            longer than the budget still gets a batch of its own).
        sort: sort by length first (descending, so the first batch shows the peak memory).
        max_batch: upper bound on sequences per batch.

    Returns:
        Lists of indices into ``lengths``; every index appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else range(len(lengths))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        candidate = max(longest, lengths[index])
        if current and (candidate * (len(current) + 1) > batch_tokens or len(current) >= max_batch):
            batches.append(current)
            current, candidate = [], lengths[index]
        current.append(index)
        longest = candidate
    if current:
        batches.append(current)
    return batches


def fixed_batches(count: int, batch_size: int) -> list[list[int]]:
    """Cut ``range(count)`` into consecutive batches of ``batch_size`` (input order)."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


def grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, *, pool_batches: int = 50
) -> list[list[int]]:
    """Training batches of similar-length sequences, in random order.

    Args:
        lengths: token count of each sequence.
        batch_size: sequences per batch.
        rng: the random source (seeded by the caller).
        pool_batches: how many batches' worth of shuffled sequences are sorted together;
            larger pools pad less but make batches less random.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * pool_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id sequences to the longest one.

    Returns:
        ``(input_ids, attention_mask)``, both ``long`` tensors of shape ``(batch, longest)``.
    """
    longest = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def pad_numpy(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id sequences to the longest one, as int64 numpy arrays.

    The inference path uses this (one array fill per row, no tensor per row); torch and
    ONNX Runtime both take the arrays without a copy.

    Returns:
        ``(input_ids, attention_mask)``, both ``int64`` arrays of shape ``(batch, longest)``.
    """
    longest = max(len(seq) for seq in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask

"""The rule statistics on hand-made windows (pure logic, no database)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from monitor.detectors import (
    NegativeVolumeSpikeDetector,
    SentimentDropDetector,
    WindowStats,
)
from monitor.rules import NegativeVolumeSpikeRule, SentimentDropRule
from tests.records import T0

H = timedelta(hours=1)


def window(hour: int, n: int, mean: float, std: float = 0.0, negatives: int = 0) -> WindowStats:
    start = T0 + hour * H
    return WindowStats("ACME", start, n, negatives, mean, std, start + 30 * timedelta(minutes=1))


def test_sentiment_baseline_is_a_running_mean_then_an_ewma() -> None:
    detector = SentimentDropDetector(SentimentDropRule(name="d", kind="sentiment_drop", halflife=1))
    state = detector.advance(None, window(0, 4, 0.2, 0.1), T0)
    state = detector.update(state, window(0, 4, 0.2, 0.1))
    assert (state["mean"], state["var"], state["posts"]) == (
        pytest.approx(0.2),
        pytest.approx(0.01),
        4,
    )
    state = detector.update(state, window(1, 2, 0.0, 0.0))
    # k=2: weight max(alpha=0.5, 1/2) = 0.5; spread = 0 + (0 - 0.2)^2 = 0.04
    assert state["mean"] == pytest.approx(0.1)
    assert state["var"] == pytest.approx(0.5 * 0.01 + 0.5 * 0.04)


def test_sentiment_z_is_in_standard_errors_of_the_window_mean() -> None:
    rule = SentimentDropRule(name="d", kind="sentiment_drop", min_baseline_posts=1)
    detector = SentimentDropDetector(rule)
    state = {"mean": 0.1, "var": 0.25, "windows": 10, "posts": 50}
    check = detector.check(state, window(5, 16, -0.4), T0)
    assert check.value == pytest.approx((-0.4 - 0.1) / (0.5 / math.sqrt(16)))  # -4.0
    assert check.hit is True
    # The same mean over 6 posts is only z = -2.4: no alert, and evidence that all is well.
    assert detector.check(state, window(5, 6, -0.4), T0).hit is False
    # Fewer posts than min_posts: no evidence either way.
    assert detector.check(state, window(5, 3, -0.9), T0).hit is None
    # A statistically clear but tiny dip stays quiet (min_drop).
    tight = {"mean": 0.1, "var": 0.0001, "windows": 10, "posts": 50}
    assert detector.check(tight, window(5, 100, 0.0), T0).hit is False


def test_sentiment_rule_warms_up() -> None:
    detector = SentimentDropDetector(SentimentDropRule(name="d", kind="sentiment_drop"))
    state = {"mean": 0.1, "var": 0.25, "windows": 3, "posts": 19}
    assert detector.check(state, window(5, 30, -0.9), T0).hit is None


def test_negative_rate_decays_over_empty_windows() -> None:
    rule = NegativeVolumeSpikeRule(name="s", kind="negative_volume_spike", halflife=10)
    detector = NegativeVolumeSpikeDetector(rule)  # alpha = 1 - 0.5 ** 0.1 = 0.067
    # First seen in the stream's third window: two empty windows were observed before it.
    state = detector.advance(None, window(2, 5, -0.5, negatives=3), T0)
    assert (state["rate"], state["windows"]) == (0.0, 2)
    state = detector.update(state, window(2, 5, -0.5, negatives=3))
    assert state["rate"] == pytest.approx(1.0)  # running mean: (0 + 0 + 3) / 3
    # Windows 3, 4, 5 empty: still a running mean, 3 negatives in 6 windows.
    short = detector.advance(state, window(6, 1, 0.0), T0)
    assert (short["rate"], short["windows"]) == (pytest.approx(0.5), 6)
    # Windows 3..99 empty: running mean up to k = 14 (1/15 < alpha), then alpha per window.
    long = detector.advance(state, window(100, 1, 0.0), T0)
    assert long["rate"] == pytest.approx(3 / 14 * 0.5 ** (86 / 10))
    assert long["windows"] == 100


def test_negative_spike_needs_ratio_and_minimum_count() -> None:
    rule = NegativeVolumeSpikeRule(name="s", kind="negative_volume_spike", warmup="1h")
    detector = NegativeVolumeSpikeDetector(rule)
    state = {"rate": 2.0, "windows": 48, "last": int((T0 + 9 * H).timestamp())}
    assert detector.check(state, window(10, 20, -0.5, negatives=8), T0).hit is True  # 8 >= 4 * 2
    assert detector.check(state, window(10, 20, -0.5, negatives=7), T0).hit is False
    quiet = {"rate": 0.0, "windows": 48, "last": int((T0 + 9 * H).timestamp())}
    assert (
        detector.check(quiet, window(10, 4, -0.9, negatives=4), T0).hit is False
    )  # < min_negative
    assert detector.check(quiet, window(10, 5, -0.9, negatives=5), T0).hit is True
    assert (
        detector.check(quiet, window(0, 9, -0.9, negatives=9), T0).hit is None
    )  # stream warming up

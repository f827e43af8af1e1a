"""The statistics behind each alert rule: pure functions over a ticker's windows.

A detector keeps a small JSON-serialisable baseline per (rule, ticker) and, for each
window in event-time order, first ``check``s the window against the baseline built from
*prior* windows only, then ``update``s the baseline with it. ``check`` answers True (the
condition holds), False (it clearly does not: a firing alert may resolve) or None (no
evidence either way: too few posts, or the baseline is still warming up).

EWMAs start as running means (weight ``max(alpha, 1/k)`` for the k-th observation) so
the first windows are not pulled towards an arbitrary zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from finpulse.schemas import WINDOW_SECONDS
from monitor.rules import NegativeVolumeSpikeRule, SentimentDropRule, VolumeSpikeRule, WindowRule

State = dict[str, Any]


@dataclass(frozen=True)
class WindowStats:
    """What the rules read from one aggregate row."""

    ticker: str
    start: datetime
    n: int
    n_negative: int
    mean: float
    std: float
    last_published_at: datetime
    # Distinct stories (near-duplicate clusters) in the window; defaults to ``n``.
    n_unique: int = -1

    def __post_init__(self) -> None:
        if self.n_unique < 0:
            object.__setattr__(self, "n_unique", self.n)


@dataclass(frozen=True)
class Check:
    """One window's verdict: ``hit`` True/False/None, the figures, and a sentence for humans."""

    hit: bool | None
    value: float
    threshold: float
    baseline: float | None
    summary: str


class Detector(Protocol):
    """How one kind of rule judges windows; see the module docstring."""

    def advance(
        self, state: State | None, window: WindowStats, stream_start: datetime
    ) -> State: ...

    def check(self, state: State, window: WindowStats, stream_start: datetime) -> Check: ...

    def update(self, state: State, window: WindowStats) -> State: ...

    def worse(self, a: float, b: float) -> bool: ...


def _alpha(halflife: float) -> float:
    return 1.0 - 0.5 ** (1.0 / halflife)


class SentimentDropDetector:
    """EWMA z-score of the window's mean score against the ticker's per-post baseline.

    The baseline tracks the per-post mean and variance of the ticker's score over prior
    windows with posts (windows without posts are skipped, not treated as a score of 0).
    A window of n posts contributes its mean and its per-post spread about the baseline,
    ``within-window variance + (window mean - baseline mean)^2``.
    """

    def __init__(self, rule: SentimentDropRule) -> None:
        self.rule = rule
        self.alpha = _alpha(rule.halflife)

    def advance(self, state: State | None, window: WindowStats, stream_start: datetime) -> State:
        return dict(state) if state else {"mean": 0.0, "var": 0.0, "windows": 0, "posts": 0}

    def check(self, state: State, window: WindowStats, stream_start: datetime) -> Check:
        rule = self.rule
        if state["posts"] < rule.min_baseline_posts or state["windows"] < 2:
            return Check(None, 0.0, -rule.z_threshold, None, "baseline warming up")
        baseline = state["mean"]
        std = max(math.sqrt(state["var"]), rule.min_std)
        z = (window.mean - baseline) / (std / math.sqrt(window.n))
        summary = (
            f"mean score {window.mean:+.2f} over {window.n} posts vs baseline {baseline:+.2f} "
            f"(std {std:.2f}): z = {z:.1f}, threshold z <= -{rule.z_threshold:g}"
        )
        if window.n < rule.min_posts:
            return Check(None, z, -rule.z_threshold, baseline, summary)
        hit = z <= -rule.z_threshold and baseline - window.mean >= rule.min_drop
        return Check(hit, z, -rule.z_threshold, baseline, summary)

    def update(self, state: State, window: WindowStats) -> State:
        k = state["windows"] + 1
        if k == 1:
            mean, var = window.mean, window.std**2
        else:
            a = max(self.alpha, 1.0 / k)
            spread = window.std**2 + (window.mean - state["mean"]) ** 2
            mean = state["mean"] + a * (window.mean - state["mean"])
            var = state["var"] + a * (spread - state["var"])
        return {"mean": mean, "var": var, "windows": k, "posts": state["posts"] + window.n}

    def worse(self, a: float, b: float) -> bool:
        """Is z-score ``a`` more alarming than ``b``?"""
        return a < b


class NegativeVolumeSpikeDetector:
    """Negative posts in the window against the ticker's EWMA rate of negative posts.

    Here an empty window is a real observation (0 negative posts), so the rate decays
    across gaps; a ticker first seen mid-stream starts from a rate of 0 that has been
    "observed" since the stream began.
    """

    def __init__(self, rule: NegativeVolumeSpikeRule) -> None:
        self.rule = rule
        self.alpha = _alpha(rule.halflife)
        self.size = WINDOW_SECONDS[rule.window]

    def advance(self, state: State | None, window: WindowStats, stream_start: datetime) -> State:
        """Decay the rate over the empty windows between the last one seen and ``window``.

        ``last`` is the epoch second of the last window observed, so the state stays valid
        if older data later moves the stream's start.
        """
        start = int(window.start.timestamp())
        if not state:
            # No posts so far: every window since the stream began was observed empty.
            observed = int((window.start - stream_start).total_seconds()) // self.size
            return {"rate": 0.0, "windows": max(observed, 0), "last": start - self.size}
        rate, k = state["rate"], state["windows"]
        gap = (start - state["last"]) // self.size - 1
        # Running-mean phase one window at a time, then the constant-alpha closed form.
        while gap > 0 and 1.0 / (k + 1) > self.alpha:
            k += 1
            rate *= 1.0 - 1.0 / k
            gap -= 1
        if gap > 0:
            rate *= (1.0 - self.alpha) ** gap
            k += gap
        return {"rate": rate, "windows": k, "last": start - self.size}

    def check(self, state: State, window: WindowStats, stream_start: datetime) -> Check:
        rule = self.rule
        rate = state["rate"]
        required = max(float(rule.min_negative), rule.ratio * max(rate, rule.min_rate))
        summary = (
            f"{window.n_negative} negative of {window.n} posts vs a baseline of {rate:.2f} "
            f"negative posts per {rule.window} (threshold {required:.1f})"
        )
        if window.start - stream_start < rule.warmup:
            return Check(None, float(window.n_negative), required, rate, "stream warming up")
        return Check(
            window.n_negative >= required, float(window.n_negative), required, rate, summary
        )

    def update(self, state: State, window: WindowStats) -> State:
        k = state["windows"] + 1
        a = max(self.alpha, 1.0 / k)
        rate = state["rate"] + a * (window.n_negative - state["rate"])
        return {"rate": rate, "windows": k, "last": int(window.start.timestamp())}

    def worse(self, a: float, b: float) -> bool:
        """Is negative count ``a`` more alarming than ``b``?"""
        return a > b


class VolumeSpikeDetector(NegativeVolumeSpikeDetector):
    """Distinct posts in the window (all labels) against the ticker's EWMA rate of them.

    The same decaying-rate baseline as ``NegativeVolumeSpikeDetector`` (``advance`` is
    shared), on ``n_unique``: a story re-published many times counts once.
    """

    def __init__(self, rule: VolumeSpikeRule) -> None:  # type: ignore[override]
        self.rule = rule  # type: ignore[assignment]
        self.alpha = _alpha(rule.halflife)
        self.size = WINDOW_SECONDS[rule.window]

    @staticmethod
    def count(window: WindowStats) -> int:
        """The window's distinct stories (near-duplicate clusters count once)."""
        return window.n_unique

    def check(self, state: State, window: WindowStats, stream_start: datetime) -> Check:
        rule: VolumeSpikeRule = self.rule  # type: ignore[assignment]
        rate, count = state["rate"], self.count(window)
        required = max(float(rule.min_posts), rule.ratio * max(rate, rule.min_rate))
        if window.n_unique is None:
            counted = f"{count} posts"
        else:
            copies = window.n - count
            counted = f"{count} distinct posts" + (
                f" ({window.n} with {copies} near-duplicate copies)" if copies else ""
            )
        summary = (
            counted
            + f" vs a baseline of {rate:.2f} per {rule.window} "
            f"(threshold {required:.1f} = max({rule.min_posts}, {rule.ratio:g} x baseline))"
        )
        if window.start - stream_start < rule.warmup:
            return Check(None, float(count), required, rate, "stream warming up")
        return Check(count >= required, float(count), required, rate, summary)

    def update(self, state: State, window: WindowStats) -> State:
        k = state["windows"] + 1
        a = max(self.alpha, 1.0 / k)
        rate = state["rate"] + a * (self.count(window) - state["rate"])
        return {"rate": rate, "windows": k, "last": int(window.start.timestamp())}


def detector_for(rule: WindowRule) -> Detector:
    """The detector that implements ``rule``'s kind."""
    if isinstance(rule, SentimentDropRule):
        return SentimentDropDetector(rule)
    if isinstance(rule, VolumeSpikeRule):
        return VolumeSpikeDetector(rule)
    return NegativeVolumeSpikeDetector(rule)


def window_end(window: WindowStats, size: str) -> datetime:
    """The (exclusive) end of a window of the given size."""
    return window.start + timedelta(seconds=WINDOW_SECONDS[size])

"""Total-volume spike: distinct stories against the ticker's own rate (pure and stored)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from finpulse.schemas import ScoredPost
from finpulse.storage import Storage
from monitor.aggregation import aggregate
from monitor.alerting import evaluate
from monitor.detectors import VolumeSpikeDetector, WindowStats, detector_for
from monitor.rules import RuleSet, VolumeSpikeRule
from tests.records import T0, scored

H = timedelta(hours=1)
M = timedelta(minutes=1)
RULE = VolumeSpikeRule(name="vol", kind="volume_spike", warmup=timedelta(hours=6))


def window(hour: int, n: int, n_unique: int | None = None) -> WindowStats:
    start = T0 + hour * H
    if n_unique is None:  # a window whose aggregate carries no cluster count
        return WindowStats("ACME", start, n, 0, 0.0, 0.0, start + 30 * M)
    return WindowStats("ACME", start, n, 0, 0.0, 0.0, start + 30 * M, n_unique)


def run_hours(detector: VolumeSpikeDetector, windows: list[WindowStats]) -> list[bool | None]:
    """Check each window against the baseline of the ones before it, as the engine does."""
    state, hits = None, []
    for w in windows:
        state = detector.advance(state, w, T0)
        hits.append(detector.check(state, w, T0).hit)
        state = detector.update(state, w)
    return hits


def test_detector_for_picks_the_volume_detector() -> None:
    assert isinstance(detector_for(RULE), VolumeSpikeDetector)


def test_many_distinct_posts_spike_but_copies_of_one_story_do_not() -> None:
    calm = [window(h, 2, 2) for h in range(12)]
    detector = VolumeSpikeDetector(RULE)
    distinct = run_hours(detector, [*calm, window(12, 20, 20)])
    assert distinct[:6] == [None] * 6  # warm-up
    assert distinct[6:12] == [False] * 6
    assert distinct[12] is True
    # 20 posts, but 18 of them re-publish one story: 3 distinct, below min_posts.
    syndicated = run_hours(detector, [*calm, window(12, 20, 3)])
    assert syndicated[12] is False
    late = window(12, 20, 3)
    check = detector.check(detector.advance(None, late, T0 - 12 * H), late, T0 - 12 * H)
    assert "3 distinct posts (20 with 17 near-duplicate copies)" in check.summary


def test_without_n_unique_the_detector_counts_every_post() -> None:
    detector = VolumeSpikeDetector(RULE)
    hits = run_hours(detector, [*(window(h, 2) for h in range(12)), window(12, 20)])
    assert hits[12] is True


def test_threshold_is_ratio_times_the_baseline_rate() -> None:
    rule = RULE.model_copy(update={"ratio": 3.0, "min_posts": 1, "warmup": timedelta(0)})
    detector = VolumeSpikeDetector(rule)
    state = {"rate": 5.0, "windows": 40, "last": int((T0 + 11 * H).timestamp())}
    state = detector.advance(state, window(12, 15, 15), T0)
    assert detector.check(state, window(12, 15, 15), T0).threshold == pytest.approx(15.0)
    assert detector.check(state, window(12, 15, 15), T0).hit is True
    assert detector.check(state, window(12, 14, 14), T0).hit is False


def _stories(hour: int, count: int, prefix: str) -> list[ScoredPost]:
    return [
        scored(f"{prefix}-{hour}-{i}", hour * H + (1 + 50 * i // max(count, 1)) * M, ("ACME",), 0.1)
        for i in range(count)
    ]


def _rules(tmp_path) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: vol, kind: volume_spike, warmup: 6h}\n")
    return RuleSet.load(path)


def test_a_burst_of_distinct_posts_fires_on_stored_windows(storage: Storage, tmp_path) -> None:
    posts = [p for h in range(12) for p in _stories(h, 2, "calm")] + _stories(12, 20, "news")
    posts += _stories(14, 2, "calm")  # the stream moves on: hour 12 closes
    storage.save_scored(posts)
    aggregate(storage, ("1h",))
    (alert,) = evaluate(storage, _rules(tmp_path))
    assert (alert.rule, alert.ticker, alert.value) == ("vol", "ACME", 20.0)
    assert alert.window == "1h" and alert.fired_at >= T0 + 12 * H
    assert "20 " in alert.explanation and "baseline" in alert.explanation


def test_a_syndicated_story_alone_is_not_a_volume_spike(storage: Storage, tmp_path) -> None:
    posts = [p for h in range(12) for p in _stories(h, 2, "calm")]
    copies = [  # one story published 20 times: the first copy's id is the cluster id
        p.model_copy(update={"cluster_id": "wire-12-0"}) for p in _stories(12, 20, "wire")
    ]
    posts += copies + _stories(14, 2, "calm")
    storage.save_scored(posts)
    aggregate(storage, ("1h",))
    assert evaluate(storage, _rules(tmp_path)) == []

"""Window aggregation: hand-checked values, window boundaries, multi-ticker posts, re-runs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from finpulse.errors import ConfigError
from finpulse.storage import Storage, utcnow
from monitor.aggregation import aggregate, window_start
from tests.records import T0, scored

M = timedelta(minutes=1)


def _dataset() -> list:
    return [
        scored("a", 30 * timedelta(seconds=1), score=-0.6, confidence=0.5),
        scored("b", 50 * timedelta(seconds=1), score=0.4, confidence=1.0),
        scored("c", 1 * M, score=-0.2, label="neutral"),  # exactly on the 1m boundary
        scored("g", 2 * M, ("ACME", "BETA"), -0.8),  # counts for both tickers
        # Two model versions: the later scored_at wins, whatever the version strings.
        scored("h", 3 * M, score=0.9, version="v9", scored_at=T0 + 10 * M),
        scored("h", 3 * M, score=-0.9, version="v10", scored_at=T0 + 20 * M),
        scored("d", 4 * M + timedelta(seconds=59), score=0.1),
        scored("e", 5 * M, score=0.2, label="neutral"),  # first second of the next 5m window
        scored("f", 60 * M, score=-0.4),  # first second of the next hour
    ]


def _by_start(storage: Storage, ticker: str, window: str) -> dict:
    return {(agg.start - T0): agg for agg in storage.aggregates(ticker, window)}


def test_window_start_is_epoch_aligned() -> None:
    assert window_start(T0 + timedelta(minutes=7, seconds=3), 300) == T0 + 5 * M
    assert window_start(T0 + 60 * M, 3600) == T0 + 60 * M
    assert window_start(T0 + 60 * M - timedelta(microseconds=1), 3600) == T0


def test_hand_checked_values(storage: Storage) -> None:
    storage.save_scored(_dataset())
    # ACME: 1m windows at 0,1,2,3,4,5,60 min; 5m at 0,5,60; 1h at 0,60. BETA: one of each.
    assert aggregate(storage) == 7 + 3 + 2 + 3

    one_minute = _by_start(storage, "ACME", "1m")
    assert sorted(one_minute) == [k * M for k in (0, 1, 2, 3, 4, 5, 60)]
    first = one_minute[timedelta(0)]  # a (-0.6, conf 0.5) and b (+0.4, conf 1.0)
    assert first.n == 2
    assert first.mean_score == pytest.approx(-0.1)
    assert first.weighted_score == pytest.approx((0.5 * -0.6 + 1.0 * 0.4) / 1.5)
    assert first.negative_share == pytest.approx(0.5)
    assert first.volume == pytest.approx(2.0)  # posts per minute
    assert one_minute[3 * M].mean_score == pytest.approx(-0.9)  # h's latest score only
    assert one_minute[3 * M].n == 1

    five = _by_start(storage, "ACME", "5m")
    block = five[timedelta(0)]  # a, b, c, g, h, d
    assert block.n == 6
    assert block.mean_score == pytest.approx((-0.6 + 0.4 - 0.2 - 0.8 - 0.9 + 0.1) / 6)
    assert block.negative_share == pytest.approx(3 / 6)  # a, g, h
    assert block.volume == pytest.approx(6 / 5)
    assert five[5 * M].n == 1

    hour = _by_start(storage, "ACME", "1h")
    assert (hour[timedelta(0)].n, hour[60 * M].n) == (7, 1)
    assert hour[timedelta(0)].volume == pytest.approx(7 / 60)

    (beta,) = storage.aggregates("BETA", "1h")
    assert (beta.n, beta.mean_score, beta.negative_share) == (1, pytest.approx(-0.8), 1.0)


def test_rerun_rewrites_the_same_rows(storage: Storage) -> None:
    storage.save_scored(_dataset())
    aggregate(storage)
    before = storage.aggregates(None, "5m")
    assert aggregate(storage) == 15
    assert storage.aggregates(None, "5m") == before


def test_since_only_touches_windows_with_new_scores(storage: Storage) -> None:
    storage.save_scored(_dataset())
    aggregate(storage)
    mark = utcnow()
    assert aggregate(storage, since=mark) == 0
    storage.save_scored([scored("i", 90 * M, score=-0.5)])
    # The 1h block 01:00-02:00 of ACME is recomputed: 1m at 60 and 90, 5m at 60 and 90, 1h at 60.
    assert aggregate(storage, since=mark) == 5
    assert _by_start(storage, "ACME", "1h")[60 * M].n == 2
    assert _by_start(storage, "ACME", "1h")[timedelta(0)].n == 7


def test_late_posts_update_their_old_window(storage: Storage) -> None:
    storage.save_scored(_dataset())
    aggregate(storage)
    mark = utcnow()
    storage.save_scored([scored("late", timedelta(seconds=10), ("BETA",), 0.6)])
    aggregate(storage, since=mark)
    (beta,) = storage.aggregates("BETA", "1h")
    assert beta.n == 2
    assert beta.mean_score == pytest.approx((-0.8 + 0.6) / 2)


def test_incremental_runs_equal_a_full_rebuild(storage: Storage) -> None:
    posts = _dataset()
    mark = None
    for i in range(0, len(posts), 2):
        storage.save_scored(posts[i : i + 2])
        aggregate(storage, since=mark)
        mark = utcnow()
        storage.save_scored(posts[i : i + 2])  # a redelivered batch changes nothing
    incremental = {w: storage.aggregates(None, w) for w in ("1m", "5m", "1h")}
    aggregate(storage)
    assert {w: storage.aggregates(None, w) for w in ("1m", "5m", "1h")} == incremental


def test_posts_without_tickers_are_not_aggregated(storage: Storage) -> None:
    storage.save_scored([scored("x", timedelta(0), ())])
    assert aggregate(storage) == 0


def test_unknown_window_is_a_config_error(storage: Storage) -> None:
    with pytest.raises(ConfigError, match="2m") as caught:
        aggregate(storage, windows=("1m", "2m"))
    assert caught.value.field == "windows"

"""Window aggregation: hand-checked values, window boundaries, multi-ticker posts, re-runs,
incremental passes from dirty markers, and the SQL against a plain Python computation."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from finpulse.errors import ConfigError
from finpulse.schemas import WINDOW_SECONDS
from finpulse.storage import Storage
from finpulse.storage import tables as t
from monitor.aggregation import aggregate, aggregate_new, window_start
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


def test_incremental_pass_only_touches_windows_with_new_scores(storage: Storage) -> None:
    storage.save_scored(_dataset())
    aggregate(storage)
    assert aggregate_new(storage).rows == 0
    storage.save_scored([scored("i", 90 * M, score=-0.5)])
    storage.save_scored([scored("i", 90 * M, score=-0.5)])  # redelivered: no new marker
    # Only the windows holding 01:30 are recomputed: 1m at 90, 5m at 90, 1h at 60.
    done = aggregate_new(storage)
    assert done.rows == 3
    assert done.markers == {("ACME", T0 + 90 * M): 1}
    assert _by_start(storage, "ACME", "1h")[60 * M].n == 2
    assert _by_start(storage, "ACME", "1h")[timedelta(0)].n == 7
    assert aggregate_new(storage).rows == 0


def test_late_posts_update_their_old_window(storage: Storage) -> None:
    storage.save_scored(_dataset())
    aggregate_new(storage)
    storage.save_scored([scored("late", timedelta(seconds=10), ("BETA",), 0.6)])
    aggregate_new(storage)
    (beta,) = storage.aggregates("BETA", "1h")
    assert beta.n == 2
    assert beta.mean_score == pytest.approx((-0.8 + 0.6) / 2)


def test_incremental_runs_equal_a_full_rebuild(storage: Storage) -> None:
    posts = _dataset()
    for i in range(0, len(posts), 2):
        storage.save_scored(posts[i : i + 2])
        aggregate_new(storage, limit=3)
        storage.save_scored(posts[i : i + 2])  # a redelivered batch changes nothing
    while aggregate_new(storage, limit=3).markers:
        pass
    incremental = {w: storage.aggregates(None, w) for w in ("1m", "5m", "1h")}
    aggregate(storage)
    assert {w: storage.aggregates(None, w) for w in ("1m", "5m", "1h")} == incremental


def _python_windows(posts: list, clusters: dict[str, str]) -> dict[tuple, dict]:
    """The aggregates computed the plain way: latest score per post, then sums per window."""
    latest: dict[str, object] = {}
    for post in posts:
        key = (post.scored_at, post.model_version)
        if post.id not in latest or key > (latest[post.id].scored_at, latest[post.id].model_version):
            latest[post.id] = post
    out: dict[tuple, dict] = {}
    for post in latest.values():
        for ticker in post.tickers:
            for window, seconds in WINDOW_SECONDS.items():
                key = (ticker, window, window_start(post.published_at, seconds))
                acc = out.setdefault(key, {"scores": [], "neg": 0, "conf": [], "stories": set(),
                                           "last": post.published_at})
                acc["scores"].append(post.score)
                acc["conf"].append(post.confidence)
                acc["neg"] += post.label == "negative"
                acc["stories"].add(clusters.get(post.id, post.id))
                acc["last"] = max(acc["last"], post.published_at)
    return out


def test_sql_aggregation_matches_a_python_computation(storage: Storage) -> None:
    rng = random.Random(7)
    posts = []
    for i in range(300):
        at = timedelta(seconds=rng.randrange(0, 2 * 86400), microseconds=rng.randrange(10**6))
        tickers = tuple(rng.sample(["ACME", "BETA", "GAMMA"], rng.randint(1, 2)))
        score = round(rng.uniform(-1, 1), 3)
        posts.append(scored(f"p{i}", at, tickers, score, confidence=rng.uniform(0.3, 1.0)))
        if i % 7 == 0:  # a second model version, scored later: it wins
            posts.append(scored(f"p{i}", at, tickers, -score, version="v0",
                                scored_at=T0 + timedelta(days=5)))
    storage.save_scored(posts[:200])
    aggregate_new(storage, windows=tuple(WINDOW_SECONDS))
    storage.save_scored(posts[200:])
    clusters = {f"p{i}": f"story-{i % 40}" for i in range(0, 300, 3)}
    with storage.begin() as conn:
        for post_id, cluster in clusters.items():
            conn.execute(sa.update(t.posts).where(t.posts.c.id == post_id).values(cluster_id=cluster))
    # Clusters changed for already stored posts too: a full rebuild, then compare all windows.
    aggregate(storage, windows=tuple(WINDOW_SECONDS))
    expected = _python_windows(posts, clusters)
    with storage.begin() as conn:
        rows = conn.execute(sa.select(t.aggregates)).mappings().all()
    assert len(rows) == len(expected)
    for row in rows:
        acc = expected[(row["ticker"], row["window_size"], row["window_start"])]
        n = len(acc["scores"])
        mean = sum(acc["scores"]) / n
        std = math.sqrt(max(sum(x * x for x in acc["scores"]) / n - mean * mean, 0.0))
        weighted = sum(c * x for c, x in zip(acc["conf"], acc["scores"])) / sum(acc["conf"])
        assert (row["n"], row["n_negative"], row["n_unique"]) == (n, acc["neg"], len(acc["stories"]))
        assert row["mean_score"] == pytest.approx(mean, abs=1e-9)
        assert row["score_std"] == pytest.approx(std, abs=1e-6)
        assert row["weighted_score"] == pytest.approx(weighted, abs=1e-9)
        assert row["last_published_at"] == acc["last"]
        assert isinstance(row["last_published_at"], datetime)


def test_n_unique_counts_stories(storage: Storage) -> None:
    storage.save_scored([scored(f"d{i}", i * M, score=-0.5) for i in range(4)])
    aggregate(storage, windows=("1h",))
    assert [a.n for a in storage.aggregates("ACME", "1h")] == [4]
    with storage.begin() as conn:
        conn.execute(sa.update(t.posts).where(t.posts.c.id.in_(["d1", "d2"]))
                     .values(cluster_id="d0"))
        n_unique = conn.execute(sa.select(t.aggregates.c.n_unique)).scalar_one()
    assert n_unique == 4  # until re-aggregated
    aggregate(storage, windows=("1h",))
    with storage.begin() as conn:
        assert conn.execute(sa.select(t.aggregates.c.n_unique)).scalar_one() == 2


def test_posts_without_tickers_are_not_aggregated(storage: Storage) -> None:
    storage.save_scored([scored("x", timedelta(0), ())])
    assert aggregate(storage) == 0


def test_unknown_window_is_a_config_error(storage: Storage) -> None:
    with pytest.raises(ConfigError, match="2m") as caught:
        aggregate(storage, windows=("1m", "2m"))
    assert caught.value.field == "windows"

"""Event time: per-ticker progress, a watermark over partitions, late posts re-judged, and
live passes that end exactly like one batch pass over the same data."""

from __future__ import annotations

import random
from datetime import timedelta

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from finpulse.metrics import Metrics
from finpulse.schemas import ScoredPost
from finpulse.services.monitor import MonitorService
from finpulse.settings import MonitorSettings
from finpulse.storage import Storage
from finpulse.storage import tables as t
from monitor.aggregation import aggregate
from monitor.judging import evaluate
from tests.monitor.test_alerting import BOTH, RULES, burst, calm
from tests.records import T0, scored

H = timedelta(hours=1)
FAR = timedelta(days=365 * 75)  # 2099


def alert_set(storage: Storage) -> set[tuple]:
    return {(a.id, a.state, a.fired_at, a.resolved_at, a.post_ids) for a in storage.alerts()}


def batch_alerts(url: str, posts: list[ScoredPost]) -> set[tuple]:
    """One batch pass (aggregate everything, evaluate once) over ``posts`` in a fresh database."""
    store = Storage(url)
    store.migrate()
    try:
        store.save_scored(posts)
        aggregate(store, windows=("1m", "5m", "1h"))
        evaluate(store, RULES)
        return alert_set(store)
    finally:
        store.dispose()


def by_hour(posts: list[ScoredPost]) -> list[list[ScoredPost]]:
    hours: dict[int, list[ScoredPost]] = {}
    for post in posts:
        hours.setdefault(int((post.published_at - T0) // H), []).append(post)
    return [hours[h] for h in sorted(hours)]


def stream() -> list[ScoredPost]:
    return (
        calm("ACME", [h for h in range(44) if h != 30])
        + burst("ACME", 30)
        + calm("BETA", range(44))
    )


def test_a_post_dated_2099_stalls_no_other_ticker(storage: Storage, tmp_path) -> None:
    posts = stream()
    future = scored("from-2099", FAR, ("ZZZ",), -0.9)
    monitor = MonitorService(storage, RULES)
    for i, hour in enumerate(by_hour(posts)):
        batch = hour + ([future] if i == 0 else [])
        newest = max(p.published_at for p in batch)
        storage.save_scored(batch, progress={("news", 0): newest})
        monitor.run_once()
    live = alert_set(storage)
    assert {a[0].split(":")[0] for a in live} == BOTH
    assert live == batch_alerts(f"sqlite:///{tmp_path / 'batch.db'}", posts + [future])
    with storage.begin() as conn:  # the stored progress is capped at the time it was stored
        (progress,) = conn.execute(sa.select(t.partition_progress.c.max_published_at)).all()
    assert progress[0] < T0 + FAR


def test_a_late_burst_reopens_its_judged_window(storage: Storage, tmp_path) -> None:
    posts = stream()
    late = [p for p in posts if "-bad-30-" in p.id][4:]
    on_time = [p for p in posts if p not in late]
    registry = CollectorRegistry()
    monitor = MonitorService(storage, RULES, Metrics(registry))
    fired = []
    for hour in by_hour(on_time):
        storage.save_scored(hour)
        if hour[0].published_at >= T0 + 34 * H and late:
            assert storage.alerts() == []  # four bad posts are too few to alert on
            # Hour 30 was judged in hour 31's pass; its other eight posts arrive now,
            # within the allowed lateness (6 h).
            storage.save_scored(late)
            late_n, late = len(late), []
            fired = monitor.run_once().fired
            assert {a.rule for a in fired} == BOTH
        monitor.run_once()
    assert fired
    assert alert_set(storage) == batch_alerts(f"sqlite:///{tmp_path / 'batch.db'}", posts)
    assert registry.get_sample_value(
        "finpulse_monitor_late_posts_total", {"outcome": "rejudged"}) == late_n
    assert registry.get_sample_value(
        "finpulse_monitor_alerts_resolved_total", {"rule": "sentiment_drop"}) == 1
    passes = len(by_hour(on_time)) + 1
    assert registry.get_sample_value("finpulse_monitor_pass_duration_seconds_count") == passes
    assert registry.get_sample_value("finpulse_monitor_last_pass_timestamp_seconds") > 0
    assert registry.get_sample_value("finpulse_monitor_dirty_windows") == 0


def test_posts_later_than_the_allowed_lateness_are_counted_not_judged(storage: Storage) -> None:
    posts = stream()
    late = [p for p in posts if "-bad-30-" in p.id][4:]
    registry = CollectorRegistry()
    monitor = MonitorService(storage, RULES, Metrics(registry),
                             MonitorSettings(allowed_lateness_s=3 * 3600))
    for hour in by_hour([p for p in posts if p not in late]):
        storage.save_scored(hour)
        monitor.run_once()
    storage.save_scored(late)
    assert monitor.run_once().fired == []
    assert storage.alerts() == []
    assert [a.n for a in storage.aggregates("ACME", "1h") if a.start == T0 + 30 * H] == [12]
    assert registry.get_sample_value(
        "finpulse_monitor_late_posts_total", {"outcome": "too_late"}) == len(late)


def test_the_watermark_waits_for_every_active_partition(storage: Storage, tmp_path) -> None:
    acme = calm("ACME", [h for h in range(44) if h != 30]) + burst("ACME", 30)
    beta = calm("BETA", range(44))
    monitor = MonitorService(storage, RULES, settings=MonitorSettings(idle_partition_s=600))
    storage.save_scored(acme, progress={("news", 0): max(p.published_at for p in acme)})
    early = [p for p in beta if p.published_at < T0 + 10 * H]
    storage.save_scored(early, progress={("news", 1): max(p.published_at for p in early)})
    monitor.run_once()
    with storage.begin() as conn:
        cursors = conn.execute(sa.select(t.rule_cursors.c.closed_until)).scalars().all()
    assert cursors and all(c <= T0 + 10 * H for c in cursors)  # partition 1 holds it back
    assert storage.alerts() == []
    # Partition 1 goes quiet for longer than idle_partition_s: it no longer holds the others.
    with storage.begin() as conn:
        conn.execute(sa.update(t.partition_progress)
                     .where(t.partition_progress.c.partition == 1)
                     .values(updated_at=T0))
    assert {a.rule for a in monitor.run_once().fired} == BOTH
    # ...and its remaining data, arriving after all, is judged as late data.
    rest = [p for p in beta if p not in early]
    storage.save_scored(rest, progress={("news", 1): max(p.published_at for p in rest)})
    monitor.run_once()
    assert alert_set(storage) == batch_alerts(f"sqlite:///{tmp_path / 'batch.db'}", acme + beta)


def test_shuffled_partitions_and_passes_end_like_one_batch_pass(
    storage: Storage, tmp_path
) -> None:
    """Six partitions keyed by ticker, delivered in random interleavings, a pass between
    random batches, some batches redelivered: the alerts equal those of one batch pass."""
    rng = random.Random(11)
    tickers = ["ACME", "BETA", "GAMMA", "DELTA"]
    posts = calm("ACME", [h for h in range(44) if h not in (20, 30)]) + burst("ACME", 20)
    posts += burst("ACME", 30, n=9) + calm("GAMMA", [h for h in range(44) if h != 25])
    posts += burst("GAMMA", 25, n=10) + calm("BETA", range(44)) + calm("DELTA", range(40))
    partitions: dict[int, list[ScoredPost]] = {}
    for post in sorted(posts, key=lambda p: p.published_at):
        partitions.setdefault(tickers.index(post.tickers[0]) % 6, []).append(post)
    monitor = MonitorService(storage, RULES, settings=MonitorSettings(max_dirty_per_pass=50))
    cursors = {p: 0 for p in partitions}
    while any(cursors[p] < len(partitions[p]) for p in partitions):
        p = rng.choice([p for p in partitions if cursors[p] < len(partitions[p])])
        batch = partitions[p][cursors[p] : cursors[p] + rng.randint(1, 30)]
        cursors[p] += len(batch)
        storage.save_scored(batch, progress={("news", p): max(x.published_at for x in batch)})
        if rng.random() < 0.2:
            storage.save_scored(batch)  # redelivered
        if rng.random() < 0.5:
            monitor.run_once()
    while monitor.run_once().waiting:
        pass
    with storage.begin() as conn:  # the stream ended: every partition goes idle
        conn.execute(sa.update(t.partition_progress).values(updated_at=T0))
    monitor.run_once()
    live = alert_set(storage)
    assert {(a[0].split(":")[0], a[0].split(":")[1]) for a in live} >= {
        (rule, ticker) for rule in BOTH for ticker in ("ACME", "GAMMA")
    }
    assert live == batch_alerts(f"sqlite:///{tmp_path / 'batch.db'}", posts)

"""Alert rules over stored aggregates: fire, update, resolve, guards, idempotence."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import sqlalchemy as sa

from finpulse.schemas import Alert, ScoredPost
from finpulse.services.monitor import MonitorService
from finpulse.storage import Storage, tables
from monitor.aggregation import aggregate
from monitor.alerting import evaluate
from monitor.rules import RuleSet
from tests.records import T0, scored

H = timedelta(hours=1)
M = timedelta(minutes=1)
# A calm hour: six posts, one of them negative; mean ~ 0.
CALM = (0.3, 0.1, -0.1, 0.2, -0.5, 0.0)
# The bundled window rules; the per-post risk events and per-source model health run in
# passes of their own (tests/monitor/test_risk_events.py, test_health.py).
RULES = RuleSet(rules=RuleSet.load().enabled)
BOTH = {"sentiment_drop", "negative_volume_spike"}


def calm(ticker: str, hours: Iterable[int]) -> list[ScoredPost]:
    return [
        scored(f"{ticker}-{h}-{i}", h * H + (5 + 9 * i) * M, (ticker,), s)
        for h in hours
        for i, s in enumerate(CALM)
    ]


def burst(ticker: str, hour: int, n: int = 12, score: float = -0.8) -> list[ScoredPost]:
    return [
        scored(
            f"{ticker}-bad-{hour}-{i}",
            hour * H + (2 + 56 * i // n) * M,
            (ticker,),
            score - 0.01 * i,
            text=f"{ticker} fraud probe {i}",
        )
        for i in range(n)
    ]


def run(storage: Storage, posts: list[ScoredPost], rules: RuleSet = RULES) -> list[Alert]:
    storage.save_scored(posts)
    aggregate(storage, windows=("1h",))
    return evaluate(storage, rules)


def by_rule(alerts: Iterable[Alert]) -> dict[str, list[Alert]]:
    out: dict[str, list[Alert]] = {}
    for alert in sorted(alerts, key=lambda a: a.fired_at):
        out.setdefault(alert.rule, []).append(alert)
    return out


def test_a_calm_series_fires_nothing(storage: Storage) -> None:
    assert run(storage, calm("ACME", range(48)) + calm("BETA", range(48))) == []
    assert storage.alerts() == []


def test_a_burst_fires_both_rules_once_with_its_posts(storage: Storage) -> None:
    posts = (
        calm("ACME", [h for h in range(48) if h != 30])
        + burst("ACME", 30)
        + calm("BETA", range(48))
    )
    fired = run(storage, posts)
    assert {a.rule for a in fired} == BOTH
    for alert in fired:
        assert (alert.ticker, alert.window) == ("ACME", "1h")
        assert alert.id == f"{alert.rule}:ACME:1h:2024-03-05T06:00Z"
        assert alert.fired_at == T0 + 30 * H + 53 * M  # the last post of the burst
        # The hour after the burst is calm (6 posts, 1 negative): the condition clears.
        assert (alert.state, alert.resolved_at) == ("resolved", T0 + 31 * H)
        # Most negative first: the burst's scores fall with i.
        assert alert.post_ids == tuple(f"ACME-bad-30-{i}" for i in (11, 10, 9, 8, 7))
        assert "ACME-bad-30-11" in alert.explanation and "fraud probe" in alert.explanation
    drop = by_rule(fired)["sentiment_drop"][0]
    assert drop.value <= -3.0 and drop.baseline is not None and drop.baseline > -0.1
    spike = by_rule(fired)["negative_volume_spike"][0]
    assert (spike.value, spike.severity) == (12.0, "critical")
    assert storage.alerts(ticker="BETA") == []


def test_rerunning_never_duplicates(storage: Storage, database_url: str) -> None:
    posts = calm("ACME", [h for h in range(40) if h != 30]) + burst("ACME", 30)
    assert len(run(storage, posts)) == 2
    stored = storage.alerts()
    assert run(storage, posts) == []
    aggregate(storage)
    assert evaluate(storage, RULES) == []
    other = Storage(database_url)  # a second monitor process on the same database
    try:
        assert evaluate(other, RULES) == []
    finally:
        other.dispose()
    assert storage.alerts() == stored


def test_too_few_posts_never_fire(storage: Storage) -> None:
    # Four dreadful posts: below min_posts (5) and below min_negative (5).
    posts = calm("ACME", [h for h in range(40) if h != 30]) + burst("ACME", 30, n=4, score=-0.95)
    assert run(storage, posts) == []


def test_cooldown_blocks_a_refire_soon_after_resolving(storage: Storage) -> None:
    bursts = {30, 33, 40}  # resolved at 31:00; 33:00 < 31:00 + 6h cooldown; 40:00 is past it
    posts = calm("ACME", [h for h in range(48) if h not in bursts])
    for hour in bursts:
        posts += burst("ACME", hour)
    fired = by_rule(run(storage, posts))
    for rule in BOTH:
        starts = [a.id.rsplit(":1h:", 1)[1] for a in fired[rule]]
        assert starts == ["2024-03-05T06:00Z", "2024-03-05T16:00Z"]


def test_an_alert_updates_while_firing_and_resolves_when_clear(storage: Storage) -> None:
    posts = calm("ACME", [h for h in range(48) if h not in (30, 31, 32)])
    posts += burst("ACME", 30) + burst("ACME", 31, n=16, score=-0.84)
    posts += calm("ACME", [32])[:2]  # two posts: too few to say the drop is over
    fired = by_rule(run(storage, posts))
    assert {rule: len(alerts) for rule, alerts in fired.items()} == {rule: 1 for rule in BOTH}
    drop = fired["sentiment_drop"][0]
    # Still firing through hour 31 (worse); hour 32 is no evidence; hour 33 is calm.
    assert drop.resolved_at == T0 + 33 * H
    assert drop.post_ids[0] == "ACME-bad-31-15"  # the worst post of either window
    spike = fired["negative_volume_spike"][0]
    assert spike.value == 16.0  # the worst window's count
    # For the spike rule two posts with no negatives is a clear window.
    assert spike.resolved_at == T0 + 32 * H
    with storage.begin() as conn:
        last = conn.execute(
            sa.select(tables.alerts.c.last_window_start).where(tables.alerts.c.id == drop.id)
        ).scalar_one()
    assert last == T0 + 31 * H


def test_an_alert_with_no_later_windows_resolves_after_resolve_after(storage: Storage) -> None:
    # ACME goes silent after its burst; BETA keeps the stream's event time moving.
    posts = calm("ACME", range(30)) + burst("ACME", 30) + calm("BETA", range(48))
    fired = run(storage, posts)
    assert {a.rule for a in fired} == BOTH
    for alert in fired:
        assert alert.resolved_at == T0 + 31 * H + 3 * H  # window end + resolve_after


def test_streaming_batches_end_like_one_pass(storage: Storage) -> None:
    """Hour by hour as a live monitor would: the burst fires once its hour has closed."""
    hours: dict[int, list[ScoredPost]] = {}
    for post in (
        calm("ACME", [h for h in range(40) if h != 30])
        + burst("ACME", 30)
        + calm("BETA", range(40))
    ):
        hours.setdefault(int((post.published_at - T0) / H), []).append(post)
    fired_in: dict[int, set[str]] = {}
    for hour in sorted(hours):
        storage.save_scored(hours[hour])
        # A new service each pass: all progress lives in the database.
        fired = MonitorService(storage, RULES).run_once().fired
        if fired:
            fired_in[hour] = {a.rule for a in fired}
        assert all(a.state == "firing" for a in fired)
    # Hour 30 closes once event time passes 31:00 + lateness (5 min): in hour 31's pass.
    assert fired_in == {31: BOTH}
    alerts = storage.alerts()
    assert {(a.rule, a.state, a.resolved_at) for a in alerts} == {
        (rule, "resolved", T0 + 31 * H) for rule in BOTH
    }
    assert all(a.fired_at == T0 + 30 * H + 53 * M for a in alerts)


def test_changing_the_baseline_config_rebuilds_without_realerting(
    storage: Storage, tmp_path
) -> None:
    posts = calm("ACME", [h for h in range(40) if h != 30]) + burst("ACME", 30)
    assert len(run(storage, posts)) == 2
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - {name: sentiment_drop, kind: sentiment_drop, halflife: 6}\n"
        "  - {name: negative_volume_spike, kind: negative_volume_spike, halflife: 6}\n"
    )
    assert evaluate(storage, RuleSet.load(path)) == []
    assert len(storage.alerts()) == 2
    later = calm("ACME", [h for h in range(40, 53) if h != 50]) + burst("ACME", 50)
    assert {a.rule for a in run(storage, later, RuleSet.load(path))} == BOTH


def test_two_monitors_evaluating_at_once_fire_each_alert_once(
    storage: Storage, database_url: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    storage.save_scored(calm("ACME", [h for h in range(40) if h != 30]) + burst("ACME", 30))
    aggregate(storage, windows=("1h",))
    monitors = [Storage(database_url), Storage(database_url)]
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda s: evaluate(s, RULES), monitors))
    finally:
        for monitor in monitors:
            monitor.dispose()
    fired = [a.id for result in results for a in result]
    assert sorted(fired) == sorted(a.id for a in storage.alerts())
    assert len(fired) == 2


def test_window_alert_evidence_has_links_and_copy_counts(storage: Storage) -> None:
    """The most negative posts come with their links and how often their story was re-published."""
    bad = burst("ACME", 30)
    bad = [
        post.model_copy(update={"url": f"https://news.example/{post.id}",
                                "cluster_id": bad[9].id if i >= 9 else None})
        for i, post in enumerate(bad)
    ]
    fired = run(storage, calm("ACME", range(30)) + bad + calm("BETA", range(40)))
    drop = next(a for a in fired if a.rule == "sentiment_drop")
    worst = min(bad, key=lambda p: p.score)
    assert f'"ACME fraud probe 11" <https://news.example/{worst.id}>' in drop.explanation
    assert f"<https://news.example/{bad[11].id}> [3 copies]" in drop.explanation
    assert f"<https://news.example/{bad[8].id}>;" in drop.explanation  # a story of its own

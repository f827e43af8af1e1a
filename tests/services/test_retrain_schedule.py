"""When ``finpulse retrain --every`` starts a run: the schedule's decision as pure logic."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from finpulse.services.retrain_schedule import next_run
from finpulse.storage.retraining import HealthAlert, ScheduleFacts

NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
DAY, COOLDOWN = timedelta(days=1), timedelta(hours=6)


def facts(last: timedelta | None = None, health: timedelta | None = None,
          alerts: tuple[tuple[str, timedelta], ...] = (), used: tuple[str, ...] = ()) -> ScheduleFacts:
    """Runs and alerts ``x`` ago; each alert fired an hour before it was last updated."""
    return ScheduleFacts(
        last_started=NOW - last if last is not None else None,
        last_health_started=NOW - health if health is not None else None,
        used_alerts=frozenset(used),
        alerts=tuple(HealthAlert(id, NOW - ago - timedelta(hours=1), NOW - ago)
                     for id, ago in alerts))


def decide(state: ScheduleFacts, **kwargs) -> tuple[str | None, datetime]:
    options = {"now": NOW, "every": DAY, "cooldown": COOLDOWN, **kwargs}
    upcoming = next_run(state, **options)
    return upcoming.trigger, upcoming.due_at


def test_a_run_is_due_one_period_after_the_last_one_from_any_process():
    assert decide(facts()) == ("schedule", NOW)  # never ran
    assert decide(facts(last=timedelta(hours=23))) == (None, NOW + timedelta(hours=1))
    assert decide(facts(last=timedelta(hours=24))) == ("schedule", NOW)
    # This process's own failed attempt postpones its next try by a period.
    assert decide(facts(last=timedelta(hours=30)), last_attempt=NOW - timedelta(hours=2)) == (
        None, NOW + timedelta(hours=22))


def test_a_firing_health_alert_starts_a_run_early():
    state = facts(last=timedelta(hours=10), alerts=(("low_confidence:news:1h:a", timedelta(hours=1)),))
    assert decide(state) == ("model_health:low_confidence:news:1h:a", NOW + timedelta(hours=14))
    # The oldest alert that qualifies names the run.
    two = facts(last=timedelta(hours=10), alerts=(("a", timedelta(hours=3)), ("b", timedelta(hours=1))))
    assert decide(two)[0] == "model_health:a"


def test_an_alert_already_acted_on_does_not_start_another_run():
    # It was last updated before the newest run started: that run already saw it.
    stale = facts(last=timedelta(hours=2), alerts=(("a", timedelta(hours=3)),))
    assert decide(stale)[0] is None
    # It triggered a run already (recorded as that run's trigger).
    used = facts(last=timedelta(hours=10), health=timedelta(hours=9),
                 alerts=(("a", timedelta(hours=1)),), used=("a",))
    assert decide(used)[0] is None


def test_early_runs_are_at_most_one_per_cooldown():
    alert = (("b", timedelta(minutes=5)),)
    inside = facts(last=timedelta(hours=5), health=timedelta(hours=5), alerts=alert, used=("a",))
    assert decide(inside)[0] is None
    after = facts(last=timedelta(hours=7), health=timedelta(hours=7), alerts=alert, used=("a",))
    assert decide(after)[0] == "model_health:b"
    assert decide(after, cooldown=timedelta(hours=8))[0] is None
    # Disabled (no cooldown): alerts never start a run; the schedule still does.
    assert decide(after, cooldown=None)[0] is None
    assert decide(facts(last=timedelta(days=2), alerts=alert), cooldown=None)[0] == "schedule"


def test_the_schedule_wins_when_both_are_due():
    state = facts(last=timedelta(days=2), alerts=(("a", timedelta(minutes=1)),))
    assert decide(state)[0] == "schedule"

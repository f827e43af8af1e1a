"""The retraining job's tables: feedback read once, runs in pages, the lease, the schedule's facts."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from finpulse.errors import LeaseHeld
from finpulse.services.retrain import feedback_items
from finpulse.storage import Storage, tables, utcnow
from finpulse.storage.feedback import add_feedback, feedback_examples
from finpulse.storage.leases import acquire_lease, release_lease, renew_lease
from finpulse.storage.retraining import (
    finish_run,
    get_run,
    list_runs,
    page_runs,
    schedule_facts,
    start_run,
)

NOW = utcnow()


def add_post(storage: Storage, post_id: str, text: str, title: str | None = None) -> None:
    with storage.begin() as conn:
        conn.execute(sa.insert(tables.posts).values(
            id=post_id, source="social", text=text, title=title, published_at=NOW, tickers=[],
            stored_at=NOW))


def add_run(storage: Storage, run_id: str, started_ago: timedelta, trigger: str = "schedule",
            decision: str | None = "rejected") -> None:
    with storage.begin() as conn:
        conn.execute(sa.insert(tables.retrain_runs).values(
            id=run_id, started_at=NOW - started_ago, trigger=trigger, champion="v1",
            decision=decision, counts={}, gold={}, feedback={}))


def add_alert(storage: Storage, alert_id: str, rule: str, *, state: str = "firing",
              updated_ago: timedelta = timedelta(0)) -> None:
    with storage.begin() as conn:
        conn.execute(sa.insert(tables.alerts).values(
            id=alert_id, rule=rule, ticker="news", window_size="1h", window_start=NOW,
            last_window_start=NOW, severity="warning", value=0.5, threshold=0.3, state=state,
            fired_at=NOW - updated_ago, updated_at=NOW - updated_ago, explanation="x"))


def test_one_feedback_reader_serves_the_api_and_the_retraining_job(storage: Storage) -> None:
    add_post(storage, "p1", "Guidance cut again", title="ACME warns")
    add_post(storage, "p2", "Record quarter")
    first = add_feedback(storage, "p1", "negative", "ana")
    add_feedback(storage, "p2", "positive", "bob")
    add_feedback(storage, "p1", "neutral", "bob", comment="on second thought")

    examples = storage.feedback_examples()
    assert [(e.post_id, e.label, e.title, e.source) for e in examples] == [
        ("p1", "negative", "ACME warns", "social"), ("p2", "positive", None, "social"),
        ("p1", "neutral", "ACME warns", "social")]
    assert examples[0].text == "Guidance cut again" and examples[0].created_at == first["created_at"]
    later = feedback_examples(storage, since=examples[1].created_at)
    assert [e.label for e in later] == ["positive", "neutral"]
    # The retraining job reads the post as the scorer does: title and text together.
    items = feedback_items(examples)
    assert "ACME warns" in items[0].text and "Guidance cut again" in items[0].text
    assert items[1].text == "Record quarter"
    assert [i.post_id for i in items] == ["p1", "p2", "p1"]


def test_runs_are_listed_newest_first_in_pages_and_read_by_id(storage: Storage) -> None:
    for i in range(5):
        add_run(storage, f"run-{i}", timedelta(hours=10 - i),
                decision="failed" if i % 2 else "rejected")
    run_id = start_run(storage, champion="v1", trigger="manual")
    finish_run(storage, run_id, decision="promoted", reason="better", seconds=12.34,
               challenger="v2", counts={"feedback": 3}, gold={"champion": {"macro_f1": 0.8}})

    seen, cursor = [], None
    while True:
        page = page_runs(storage, limit=2, cursor=cursor)
        assert len(page.items) <= 2
        seen += [run.id for run in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [run_id, "run-4", "run-3", "run-2", "run-1", "run-0"]
    assert [r.id for r in list_runs(storage, limit=3)] == seen[:3]
    assert [r.id for r in page_runs(storage, decision="failed").items] == ["run-3", "run-1"]

    run = get_run(storage, run_id)
    assert (run.decision, run.challenger, run.seconds, run.counts) == ("promoted", "v2", 12.3,
                                                                      {"feedback": 3})
    assert run.finished_at >= run.started_at
    assert get_run(storage, "no-such-run") is None
    with pytest.raises(ValueError, match="cursor"):
        page_runs(storage, cursor="bm90IGEgY3Vyc29y")


def test_a_trigger_names_the_alert_that_started_the_run(storage: Storage) -> None:
    alert_id = "label_drift:" + "s" * 150 + ":1h:2026-11-30T10:00Z"
    run_id = start_run(storage, champion="v1", trigger=f"model_health:{alert_id}")
    assert get_run(storage, run_id).trigger == f"model_health:{alert_id}"


def test_the_lease_has_one_holder_until_it_lapses_or_is_released(storage: Storage) -> None:
    term = timedelta(minutes=10)
    acquire_lease(storage, "retrain", "a", term)
    acquire_lease(storage, "retrain", "a", term)  # the holder may take it again
    with pytest.raises(LeaseHeld) as held:
        acquire_lease(storage, "retrain", "b", term)
    assert held.value.holder == "a" and held.value.expires_at > utcnow()
    assert renew_lease(storage, "retrain", "a", term)
    assert not renew_lease(storage, "retrain", "b", term)
    release_lease(storage, "retrain", "b")  # not b's: nothing happens
    with pytest.raises(LeaseHeld):
        acquire_lease(storage, "retrain", "b", term)
    acquire_lease(storage, "other-job", "b", term)  # leases are per name

    # A holder that stops renewing (its process died) loses the lease once it lapses.
    acquire_lease(storage, "retrain", "a", timedelta(seconds=-1))
    acquire_lease(storage, "retrain", "b", term)
    assert not renew_lease(storage, "retrain", "a", term)
    release_lease(storage, "retrain", "b")
    acquire_lease(storage, "retrain", "a", term)


def test_racing_processes_never_both_take_the_lease(storage: Storage) -> None:
    n = 6
    barrier, winners, errors = threading.Barrier(n), [], []

    def contend(holder: str) -> None:
        barrier.wait()
        try:
            acquire_lease(storage, "retrain", holder, timedelta(minutes=10))
            winners.append(holder)
        except LeaseHeld:
            pass
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(f"h{i}",)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(winners) == 1


def test_schedule_facts_see_runs_from_every_process_and_firing_health_alerts(
    storage: Storage,
) -> None:
    empty = schedule_facts(storage, ["low_confidence"])
    assert (empty.last_started, empty.last_health_started, empty.used_alerts, empty.alerts) == (
        None, None, frozenset(), ())

    add_run(storage, "old", timedelta(hours=30), decision="promoted")
    add_run(storage, "early", timedelta(hours=20), trigger="model_health:low_confidence:news:1h:x",
            decision="failed")
    add_run(storage, "broken", timedelta(hours=1), decision="failed")
    add_run(storage, "running", timedelta(hours=5), decision=None)
    add_alert(storage, "low_confidence:news:1h:y", "low_confidence", updated_ago=timedelta(hours=2))
    add_alert(storage, "low_confidence:news:1h:x", "low_confidence", updated_ago=timedelta(hours=21))
    add_alert(storage, "low_confidence:social:1h:z", "low_confidence", state="resolved")
    add_alert(storage, "drop_1h:ACME:1h:w", "drop_1h")

    facts = schedule_facts(storage, ["low_confidence", "label_drift"])
    # A failed run does not count as the last run; one still running does.
    assert facts.last_started == NOW - timedelta(hours=5)
    assert facts.last_health_started == NOW - timedelta(hours=20)
    assert facts.used_alerts == {"low_confidence:news:1h:x"}
    assert [a.id for a in facts.alerts] == ["low_confidence:news:1h:x", "low_confidence:news:1h:y"]
    assert facts.alerts[1].updated_at == NOW - timedelta(hours=2)
    assert schedule_facts(storage, []).alerts == ()

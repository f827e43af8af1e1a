"""The notifier over real receivers: signed webhooks, retries, dead letters, acks, the outbox.

Runs on SQLite and PostgreSQL (the ``storage`` fixture) against real HTTP servers in threads.
"""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from finpulse.metrics import Metrics
from finpulse.storage import Storage, tables
from finpulse.storage.history import acknowledge_alert
from finpulse.storage.outbox import pending_count
from finpulse.storage.subscriptions import create_subscription, list_deliveries
from monitor.notifiers.webhook import WebhookChannel, sign
from monitor.notifiers.worker import Notifier, NotifierPolicy
from tests.monitor.receivers import (
    Receiver,
    burst,
    calm,
    change_alert,
    insert_alert,
    run,
    wait_for,
)

FAST = NotifierPolicy(workers=4, max_attempts=3, backoff_base_s=0.01, backoff_cap_s=0.05,
                      lease=timedelta(seconds=30))


def notifier_for(storage: Storage, metrics: Metrics | None = None, timeout_s: float = 10.0,
                 policy: NotifierPolicy = FAST) -> Notifier:
    return Notifier(storage, {"webhook": WebhookChannel(timeout_s)}, policy, metrics)


def statuses(storage: Storage) -> list[str]:
    with storage.begin() as conn:
        return sorted(conn.execute(sa.select(tables.deliveries.c.status)).scalars())


def settle(notifier: Notifier, storage: Storage, done) -> None:
    assert wait_for(done, step=lambda: (notifier.run_once(), notifier.drain(5)))


def test_alert_changes_write_outbox_events_in_their_transaction(storage: Storage) -> None:
    fired = run(storage, calm("ACME", [h for h in range(48) if h != 30]) + burst("ACME", 30))
    assert fired
    with storage.begin() as conn:
        events = conn.execute(
            sa.select(tables.outbox.c.alert_id, tables.outbox.c.kind, tables.outbox.c.payload)
            .order_by(tables.outbox.c.id)
        ).all()
    kinds: dict[str, list[str]] = {}
    for alert_id, kind, payload in events:
        kinds.setdefault(alert_id, []).append(kind)
        assert json.loads(payload)["alert"]["id"] == alert_id
    # Each alert fired once and resolved once (the hour after the burst is calm).
    assert {a.id: ["fired", "resolved"] for a in fired} == kinds
    first = json.loads(events[0][2])["alert"]
    assert first["posts"] and first["posts"][0]["id"].startswith("ACME-bad-30-")


def test_webhook_delivers_signed_events_to_matching_subscriptions_only(storage: Storage) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    with Receiver() as wanted, Receiver() as other:
        sub = create_subscription(storage, channel="webhook", target=wanted.url,
                                  tickers=["acme"], rules=["negative_volume_spike"])
        create_subscription(storage, channel="webhook", target=other.url, tickers=["BETA"])
        create_subscription(storage, channel="webhook", target=other.url,
                            min_severity="critical", rules=["sentiment_drop"])
        run(storage, calm("ACME", [h for h in range(48) if h != 30]) + burst("ACME", 30)
            + calm("BETA", range(48)))
        notifier = notifier_for(storage, metrics)
        try:
            settle(notifier, storage, lambda: len(wanted.requests) >= 2 and not pending_count(storage))
            assert notifier.run_once() == 0  # nothing left; refreshes the pending gauge
        finally:
            notifier.close()
        assert other.requests == []  # BETA never alerted; sentiment_drop is a warning
        assert [b["event"] for b in wanted.bodies] == ["fired", "resolved"]
        for (headers, body), parsed in zip(wanted.requests, wanted.bodies):
            assert headers["X-Finpulse-Signature"] == sign(sub["secret"], body)
            assert headers["X-Finpulse-Delivery"] == parsed["delivery_id"]
            assert parsed["alert"]["rule"] == "negative_volume_spike"
            assert parsed["subscription_id"] == sub["id"]
        assert len(set(wanted.delivery_ids)) == 2
    assert statuses(storage) == ["delivered", "delivered"]
    labels = {"channel": "webhook", "status": "delivered"}
    assert registry.get_sample_value("finpulse_notifier_deliveries_total", labels) == 2
    assert registry.get_sample_value("finpulse_notifier_delivery_latency_seconds_count") == 2
    assert registry.get_sample_value("finpulse_notifier_outbox_pending") == 0


def test_a_hanging_subscriber_blocks_no_one_and_a_failing_one_recovers(storage: Storage) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    with Receiver() as hanging, Receiver(plan=[500, 503]) as flaky, Receiver() as good:
        hanging.hold.set()
        for receiver in (hanging, flaky, good):
            create_subscription(storage, channel="webhook", target=receiver.url)
        first = insert_alert(storage)
        second = insert_alert(storage, "sentiment_drop:BETA:1h:2024-03-04T06:00Z",
                              ticker="BETA", rule="sentiment_drop", severity="warning")
        notifier = notifier_for(storage, metrics, timeout_s=DEADLINE_HANG)
        try:
            # Every good and flaky delivery completes while the hanging receiver holds its
            # requests (it is released only afterwards).
            # (The hanging receiver's first request may arrive after the others are done: wait
            # for it too, then check that it is still held, unanswered.)
            ok = wait_for(lambda: len(good.requests) == 2 and len(set(flaky.delivery_ids)) == 2
                          and flaky.plan == [] and hanging.held.is_set(), step=notifier.run_once)
            assert ok and hanging.requests == []
            hanging.released.set()
            settle(notifier, storage, lambda: not pending_count(storage))
        finally:
            hanging.released.set()
            notifier.close()
        assert {b["alert"]["id"] for b in good.bodies} == {first, second}
        assert len(flaky.requests) == 4  # two 5xx answers, then both delivered
        assert len(set(hanging.delivery_ids)) == 2
    assert statuses(storage) == ["delivered"] * 6
    retried = registry.get_sample_value("finpulse_notifier_deliveries_total",
                                        {"channel": "webhook", "status": "retried"})
    assert retried == 2


DEADLINE_HANG = 60.0


def test_failed_deliveries_end_dead_and_visible(storage: Storage) -> None:
    registry = CollectorRegistry()
    with Receiver(default=500) as down, Receiver(default=410) as gone:
        create_subscription(storage, channel="webhook", target=down.url, name="down")
        create_subscription(storage, channel="webhook", target=gone.url, name="gone")
        insert_alert(storage)
        notifier = notifier_for(storage, Metrics(registry))
        try:
            settle(notifier, storage, lambda: not pending_count(storage))
        finally:
            notifier.close()
        assert len(down.requests) == FAST.max_attempts  # retried, then given up
        assert len(gone.requests) == 1  # 410: permanent, not retried
    dead = list_deliveries(storage, status="dead").items
    assert {(d["subscription_name"], d["attempts"]) for d in dead} == {("down", 3), ("gone", 1)}
    assert all("HTTP" in d["last_error"] for d in dead)
    assert registry.get_sample_value("finpulse_notifier_deliveries_total",
                                     {"channel": "webhook", "status": "dead"}) == 2


def test_an_acknowledged_alert_sends_no_updates_until_it_resolves(storage: Storage) -> None:
    with Receiver() as receiver:
        create_subscription(storage, channel="webhook", target=receiver.url)
        ident = insert_alert(storage)
        notifier = notifier_for(storage)
        settle(notifier, storage, lambda: not pending_count(storage))  # fired, before the ack
        change_alert(storage, ident, "updated")
        acknowledge_alert(storage, ident, "ann", "looking into it")
        change_alert(storage, ident, "updated")
        change_alert(storage, ident, "resolved")
        try:
            settle(notifier, storage, lambda: not pending_count(storage))
        finally:
            notifier.close()
        # Updates not yet dispatched when the ack came are not sent either.
        assert [b["event"] for b in receiver.bodies] == ["fired", "resolved"]
        resolved = receiver.bodies[-1]["alert"]
        assert (resolved["acked_by"], resolved["state"]) == ("ann", "resolved")


def test_paused_and_removed_subscriptions(storage: Storage) -> None:
    from finpulse.storage.outbox import dispatch
    from finpulse.storage.subscriptions import remove_subscription

    with Receiver() as receiver:
        sub = create_subscription(storage, channel="webhook", target=receiver.url)
        create_subscription(storage, channel="webhook", target=receiver.url, active=False)
        insert_alert(storage)
        assert dispatch(storage) == 1  # one delivery per subscription
        assert remove_subscription(storage, sub["id"])
        notifier = notifier_for(storage)
        try:
            settle(notifier, storage, lambda: bool(list_deliveries(storage, status="dead").items))
        finally:
            notifier.close()
        assert receiver.requests == []
    # Removed before it was sent: dead with a reason, not silently dropped; the paused
    # subscription was not sent events while paused.
    dead = list_deliveries(storage, status="dead").items
    assert [d["last_error"] for d in dead] == ["subscription removed"]
    assert statuses(storage) == ["dead"]


def test_slack_gets_a_text_and_blocks_message(storage: Storage) -> None:
    from monitor.notifiers.webhook import SlackChannel

    with Receiver() as slack:
        create_subscription(storage, channel="slack", target=slack.url)
        ident = insert_alert(storage)
        notifier = Notifier(storage, {"slack": SlackChannel(10)}, FAST)
        try:
            settle(notifier, storage, lambda: not pending_count(storage))
        finally:
            notifier.close()
        (message,) = slack.bodies
    assert message["text"] == "[critical] ACME negative_volume_spike fired (1h)"
    header, section = message["blocks"]
    assert header["type"] == "header" and section["text"]["type"] == "mrkdwn"
    assert "value 5.0 against threshold 3.0" in section["text"]["text"]
    assert ident in section["text"]["text"]
    assert slack.delivery_ids and "X-Finpulse-Signature" not in slack.requests[0][0]

"""The one error policy: how faults are classified, and back-off with jitter."""

from __future__ import annotations

import random
import threading

import pytest

from finpulse.errors import ConfigError, IngestError, MalformedMessage, ModelError, StorageError
from finpulse.services.policy import Backoff, classify, internal_reason, retry_transient
from finpulse.storage import Storage


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        (MalformedMessage("not_json", "x"), "message"),
        (StorageError("refused", transient=False), "message"),
        (StorageError("unreachable"), "transient"),
        (IngestError("broker down"), "transient"),
        (IngestError("commit refused after a rebalance", transient=False), "message"),
        (ConnectionRefusedError(), "transient"),
        (ConfigError("bad"), "fatal"),
        (ModelError("corrupt"), "fatal"),
        (RecursionError("deep"), "message"),
        (KeyError("x"), "message"),
    ],
)
def test_classify(exc, fault):
    assert classify(exc) == fault


def test_internal_reason_names_the_exception_type():
    entry = internal_reason(KeyError("tickers"))
    assert entry.reason == "internal"
    assert entry.detail.startswith("KeyError")


def test_backoff_grows_to_its_cap_with_jitter_and_resets():
    backoff = Backoff(base_s=0.5, cap_s=4.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [min(4.0, 0.5 * 2**i) for i in range(8)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_retry_transient_retries_until_success_and_reraises_the_rest():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise StorageError("connection refused")
        return "ok"

    waits = []
    result = retry_transient(flaky, stop=threading.Event(), what="test",
                             backoff=Backoff(base_s=0.01, cap_s=0.02), wait=waits.append)
    assert result == "ok" and len(calls) == 3 and len(waits) == 2

    def refused():
        raise StorageError("value out of range", transient=False)

    with pytest.raises(StorageError):
        retry_transient(refused, stop=threading.Event(), what="test")


def test_retry_transient_gives_up_when_stopping():
    stop = threading.Event()
    stop.set()
    assert retry_transient(lambda: 1, stop=stop, what="test") is None


@pytest.mark.postgres
def test_postgres_refusals_and_outages_are_told_apart(postgres_url):
    store = Storage(postgres_url)
    try:
        with pytest.raises(StorageError) as refused:
            with store.begin() as conn:
                conn.exec_driver_sql("SELECT 1/0")
        assert refused.value.transient is False
    finally:
        store.dispose()
    unreachable = Storage("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(StorageError) as down:
        with unreachable.begin() as conn:
            conn.exec_driver_sql("SELECT 1")
    assert down.value.transient is True
    unreachable.dispose()


def test_attempt_first_finishes_the_work_in_hand_but_retries_end_on_stop():
    stop = threading.Event()
    stop.set()
    assert retry_transient(lambda: 7, stop=stop, what="x") is None
    assert retry_transient(lambda: 7, stop=stop, what="x", attempt_first=True) == 7
    calls = []

    def down():
        calls.append(1)
        raise StorageError("unreachable")

    assert retry_transient(down, stop=stop, what="x", attempt_first=True, wait=lambda s: None) is None
    assert len(calls) == 1

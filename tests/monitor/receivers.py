"""Real receivers for the notifier tests: an HTTP server in a thread, alerts to deliver.

Also a stored history with alerts (``calm``, ``burst``, ``run``, the shape the alerting tests
use) for the notifier and API tests.

``Receiver`` answers each POST according to its ``plan`` (status codes, in order; then
``default``), or holds the request while ``hold`` is set (a subscriber that hangs).
It records every request (headers, body) and the distinct delivery ids, as a real
receiver deduplicating on ``X-Finpulse-Delivery`` would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sqlalchemy as sa

from finpulse.schemas import Alert, ScoredPost
from finpulse.storage import Storage, tables, utcnow
from finpulse.storage.outbox import record_alert_event
from tests.records import scored

DEADLINE_S = 30.0


class Receiver:
    """An HTTP receiver on a free loopback port; a context manager."""

    def __init__(self, plan: list[int] | None = None, default: int = 200) -> None:
        self.plan = list(plan or [])
        self.default = default
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.hold = threading.Event()
        self.released = threading.Event()
        self.held = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.hold.is_set():
                    receiver.held.set()
                    receiver.released.wait(DEADLINE_S)
                with receiver._lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                    status = receiver.plan.pop(0) if receiver.plan else receiver.default
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for _, body in self.requests]

    @property
    def delivery_ids(self) -> list[str]:
        with self._lock:
            return [headers["X-Finpulse-Delivery"] for headers, _ in self.requests]


def wait_for(condition: Callable[[], bool], deadline_s: float = DEADLINE_S,
             step: Callable[[], object] | None = None) -> bool:
    """Call ``step`` (if any) until ``condition()`` holds or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if step is not None:
            step()
        if condition():
            return True
        threading.Event().wait(0.02)
    return condition()


def insert_alert(
    storage: Storage,
    ident: str = "negative_volume_spike:ACME:1h:2024-03-04T06:00Z",
    *,
    ticker: str = "ACME",
    rule: str = "negative_volume_spike",
    severity: str = "critical",
) -> str:
    """Store a firing alert and its ``fired`` event in one transaction, as alerting does."""
    now = utcnow()
    with storage.begin() as conn:
        conn.execute(
            sa.insert(tables.alerts).values(
                id=ident, rule=rule, ticker=ticker, window_size="1h",
                window_start=now - timedelta(hours=1), last_window_start=now - timedelta(hours=1),
                severity=severity, value=5.0, threshold=3.0, baseline=1.0, state="firing",
                fired_at=now, resolved_at=None, updated_at=now,
                explanation=f"{rule} on 1h windows: value 5.0 against threshold 3.0",
            )
        )
        record_alert_event(conn, ident, "fired")
    return ident


def change_alert(storage: Storage, ident: str, kind: str) -> None:
    """Extend (``updated``) or resolve (``resolved``) an alert with its event, in one transaction."""
    now = utcnow()
    values: dict[str, Any] = {"updated_at": now}
    if kind == "resolved":
        values.update(state="resolved", resolved_at=now)
    else:
        values.update(value=6.0)
    with storage.begin() as conn:
        conn.execute(sa.update(tables.alerts).where(tables.alerts.c.id == ident).values(**values))
        record_alert_event(conn, ident, kind)  # type: ignore[arg-type]


# ---- a stored history with alerts (the same shape as tests/monitor/test_alerting.py's) ----

H = timedelta(hours=1)
M = timedelta(minutes=1)
CALM = (0.3, 0.1, -0.1, 0.2, -0.5, 0.0)


def calm(ticker: str, hours: Iterable[int]) -> list[ScoredPost]:
    """Six posts an hour, one of them negative: mean about 0."""
    return [
        scored(f"{ticker}-{h}-{i}", h * H + (5 + 9 * i) * M, (ticker,), s)
        for h in hours
        for i, s in enumerate(CALM)
    ]


def burst(ticker: str, hour: int, n: int = 12, score: float = -0.8) -> list[ScoredPost]:
    """``n`` strongly negative posts in one hour ("<ticker> fraud probe <i>")."""
    return [
        scored(f"{ticker}-bad-{hour}-{i}", hour * H + (2 + 56 * i // n) * M, (ticker,),
               score - 0.01 * i, text=f"{ticker} fraud probe {i}")
        for i in range(n)
    ]


def run(storage: Storage, posts: list[ScoredPost]) -> list[Alert]:
    """Store, aggregate (1h) and evaluate the default rules: the alerts that fired."""
    from monitor.aggregation import aggregate
    from monitor.alerting import evaluate
    from monitor.rules import RuleSet

    storage.save_scored(posts)
    aggregate(storage, windows=("1h",))
    return evaluate(storage, RuleSet.load())

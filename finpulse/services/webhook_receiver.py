"""A small webhook receiver for the demo: checks each delivery's signature and deduplicates.

It is what a subscriber's endpoint does with finpulse's webhooks: verify
``X-Finpulse-Signature`` with the shared secret, acknowledge with 2xx, and act once per
``X-Finpulse-Delivery`` id however often the same delivery arrives.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One delivery as the receiver saw it."""

    delivery_id: str
    event: str
    alert_id: str
    ticker: str
    rule: str
    signature_ok: bool
    duplicate: bool


class WebhookReceiver:
    """An HTTP server on ``host`` (free port) in a daemon thread; a context manager.

    Args:
        secret: the subscription's signing secret (set before the first delivery).
        host: the address to bind.
    """

    def __init__(self, secret: str | None = None, host: str = "127.0.0.1") -> None:
        self.secret = secret
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver._record(dict(self.headers.items()), body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/finpulse"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    def _record(self, headers: dict[str, str], body: bytes) -> None:
        expected = "sha256=" + hmac.new((self.secret or "").encode(), body, hashlib.sha256).hexdigest()
        signature_ok = hmac.compare_digest(headers.get("X-Finpulse-Signature", ""), expected)
        doc = json.loads(body)
        alert = doc.get("alert", {})
        with self._lock:
            seen = {r.delivery_id for r in self.received}
            delivery_id = headers.get("X-Finpulse-Delivery", "")
            self.received.append(Received(delivery_id, doc.get("event", "?"), alert.get("id", "?"),
                                          alert.get("ticker", "?"), alert.get("rule", "?"),
                                          signature_ok, delivery_id in seen))

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

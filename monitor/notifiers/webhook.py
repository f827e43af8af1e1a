"""HTTP channels: a signed JSON webhook, and Slack-compatible incoming webhooks.

Webhook body: the delivery's JSON document (``Delivery.body()``), UTF-8, compact.
Headers: ``X-Finpulse-Delivery`` (stable id to deduplicate on) and
``X-Finpulse-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes, keyed with the
subscription's secret>``. Any 2xx is an acknowledgement. 408, 425, 429 and 5xx, time-outs
and connection errors are retried (honouring ``Retry-After`` in seconds); other 4xx are
permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

from finpulse.errors import AlertDeliveryError
from finpulse.storage.outbox import Delivery
from monitor.notifiers.base import DELIVERY_HEADER, SIGNATURE_HEADER, describe

_RETRYABLE = {408, 425, 429}


def sign(secret: str, body: bytes) -> str:
    """The ``X-Finpulse-Signature`` value of ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def post_json(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> None:
    """POST ``body`` and map the outcome onto ``AlertDeliveryError``.

    Raises:
        AlertDeliveryError: a time-out, connection error or non-2xx answer.
    """
    try:
        response = client.post(url, content=body, headers={"Content-Type": "application/json", **headers})
    except httpx.TimeoutException as exc:
        raise AlertDeliveryError(f"timed out: {type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise AlertDeliveryError(f"{type(exc).__name__}: {exc}") from exc
    if 200 <= response.status_code < 300:
        return
    status = response.status_code
    permanent = 400 <= status < 500 and status not in _RETRYABLE
    raise AlertDeliveryError(
        f"HTTP {status} from {url}", retry_after=_retry_after(response), permanent=permanent
    )


class WebhookChannel:
    """POSTs the signed JSON body to the subscription's URL.

    Args:
        timeout_s: the whole request's time limit (connect, write, read).
        client: an ``httpx.Client`` to reuse; one is made otherwise.
    """

    def __init__(self, timeout_s: float = 10.0, client: httpx.Client | None = None) -> None:
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)

    def send(self, delivery: Delivery) -> None:
        body = json.dumps(delivery.body(), separators=(",", ":")).encode("utf-8")
        headers = {DELIVERY_HEADER: delivery.id}
        if delivery.secret:
            headers[SIGNATURE_HEADER] = sign(delivery.secret, body)
        post_json(self._client, delivery.target, body, headers)

    def close(self) -> None:
        self._client.close()


class SlackChannel(WebhookChannel):
    """POSTs a Slack incoming-webhook message (``text`` plus ``blocks`` of mrkdwn sections)."""

    def send(self, delivery: Delivery) -> None:
        lines = describe(delivery)
        payload: dict[str, Any] = {
            "text": lines[0],
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": lines[0][:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines[1:])[:2900]}},
            ],
        }
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        post_json(self._client, delivery.target, body, {DELIVERY_HEADER: delivery.id})

"""What every channel is: something that sends one claimed delivery or raises."""

from __future__ import annotations

from typing import Protocol

from finpulse.storage.outbox import Delivery

DELIVERY_HEADER = "X-Finpulse-Delivery"
SIGNATURE_HEADER = "X-Finpulse-Signature"


class Channel(Protocol):
    """Sends deliveries of one kind (webhook, slack, email, kafka)."""

    def send(self, delivery: Delivery) -> None:
        """Deliver, returning once the receiver acknowledged it.

        Raises:
            AlertDeliveryError: the receiver failed, refused or did not answer in time
                (``permanent`` when retrying cannot help).
        """
        ...


def headline(delivery: Delivery) -> str:
    """One line for people: "[critical] BA negative_volume_spike fired (1h)"."""
    alert = delivery.payload["alert"]
    return (
        f"[{alert['severity']}] {alert['ticker']} {alert['rule']} {delivery.kind} "
        f"({alert['window']})"
    )


def describe(delivery: Delivery) -> list[str]:
    """The alert in a few lines of text: headline, explanation, top posts with links."""
    alert = delivery.payload["alert"]
    why = alert["explanation"].split(" | ", 1)[0]
    lines = [headline(delivery), why]
    if alert.get("acked_by"):
        lines.append(f"acknowledged by {alert['acked_by']} at {alert['acked_at']}")
    for post in alert.get("posts", [])[:3]:
        link = f" {post['url']}" if post.get("url") else ""
        lines.append(f"- ({post['score']:+.2f}) {post['snippet']}{link}")
    lines.append(f"alert {alert['id']}, delivery {delivery.id}")
    return lines

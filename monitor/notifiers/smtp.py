"""E-mail over SMTP: one plain-text message per delivery, STARTTLS and login optional.

The message carries ``X-Finpulse-Delivery`` and a ``Message-ID`` derived from the delivery
id, so a re-sent message is recognisably the same one. SMTP errors with a 5xx reply are
permanent (the server refused the message or recipient); the rest are retried.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from email.message import EmailMessage

from finpulse.errors import AlertDeliveryError
from finpulse.settings import SmtpSettings
from finpulse.storage.outbox import Delivery
from monitor.notifiers.base import DELIVERY_HEADER, describe, headline


class EmailChannel:
    """Sends each delivery to the subscription's address through one SMTP server."""

    def __init__(self, smtp: SmtpSettings) -> None:
        self.smtp = smtp

    def message(self, delivery: Delivery) -> EmailMessage:
        """The e-mail for a delivery (text body, the JSON document attached)."""
        msg = EmailMessage()
        msg["Subject"] = "finpulse " + headline(delivery)
        msg["From"] = self.smtp.sender
        msg["To"] = delivery.target
        domain = self.smtp.sender.rpartition("@")[2] or "finpulse"
        msg["Message-ID"] = f"<{delivery.id}@{domain}>"
        msg[DELIVERY_HEADER] = delivery.id
        msg.set_content("\n".join(describe(delivery)) + "\n")
        msg.add_attachment(
            json.dumps(delivery.body(), indent=2).encode("utf-8"),
            maintype="application",
            subtype="json",
            filename="alert.json",
        )
        return msg

    def send(self, delivery: Delivery) -> None:
        cfg = self.smtp
        try:
            with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s) as client:
                if cfg.starttls:
                    cafile = str(cfg.ca_file) if cfg.ca_file else None
                    client.starttls(context=ssl.create_default_context(cafile=cafile))
                if cfg.username:
                    password = cfg.password.get_secret_value() if cfg.password else ""
                    client.login(cfg.username, password)
                client.send_message(self.message(delivery))
        except smtplib.SMTPResponseException as exc:
            raise AlertDeliveryError(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=exc.smtp_code >= 500
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise AlertDeliveryError(f"recipient refused: {delivery.target}", permanent=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise AlertDeliveryError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Nothing to release: each delivery opens its own SMTP session."""

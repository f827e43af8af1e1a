"""The notifier's other channels and its crash safety, against real servers.

E-mail through a real SMTP server (aiosmtpd, plain and STARTTLS), the Kafka channel through
the session's broker, and a notifier process killed between a send and its mark.
"""

from __future__ import annotations

import email
import socket
import ssl
import subprocess
import sys
import uuid
from datetime import timedelta
from email.message import Message
from pathlib import Path

import pytest
import sqlalchemy as sa

from finpulse.settings import KafkaSettings, SmtpSettings
from finpulse.storage import Storage, tables
from finpulse.storage.outbox import pending_count
from finpulse.storage.subscriptions import create_subscription
from monitor.notifiers.smtp import EmailChannel
from monitor.notifiers.topic import KafkaChannel
from monitor.notifiers.webhook import WebhookChannel
from monitor.notifiers.worker import Notifier, NotifierPolicy
from tests.monitor.receivers import Receiver, insert_alert, wait_for

ROOT = Path(__file__).resolve().parents[2]
POLICY = NotifierPolicy(workers=2, max_attempts=3, backoff_base_s=0.01, backoff_cap_s=0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def _deliver_all(storage: Storage, notifier: Notifier) -> None:
    try:
        assert wait_for(lambda: not pending_count(storage),
                        step=lambda: (notifier.run_once(), notifier.drain(10)))
    finally:
        notifier.close()


@pytest.mark.parametrize("starttls", [False, True])
def test_email_through_a_real_smtp_server(sqlite_url: str, tmp_path: Path, starttls: bool) -> None:
    from aiosmtpd.controller import Controller

    inbox = _Inbox()
    port = _free_port()
    options: dict = {}
    ca_file = None
    if starttls:
        ca_file, key = _self_signed(tmp_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(ca_file, key)
        options = {"tls_context": context, "require_starttls": True}
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    storage = Storage(sqlite_url)
    storage.migrate()
    try:
        create_subscription(storage, channel="email", target="risk@example.com")
        ident = insert_alert(storage)
        smtp = SmtpSettings(host="127.0.0.1", port=port, sender="alerts@finpulse.test",
                            starttls=starttls, ca_file=ca_file)
        _deliver_all(storage, Notifier(storage, {"email": EmailChannel(smtp)}, POLICY))
    finally:
        controller.stop()
        storage.dispose()
    assert len(inbox.messages) == 1
    msg = inbox.messages[0]
    assert msg["To"] == "risk@example.com" and "ACME" in msg["Subject"]
    assert msg["Message-ID"] == f"<{msg['X-Finpulse-Delivery']}@finpulse.test>"
    text = msg.get_payload()[0].get_payload(decode=True).decode()
    assert ident in text and "value 5.0 against threshold 3.0" in text


def test_kafka_channel_publishes_to_the_alerts_topic(sqlite_url: str,
                                                     kafka_settings: KafkaSettings) -> None:
    from ingest.producer import PostProducer
    from tests.ingest.kafka_io import read_topic

    topic = f"alerts-{uuid.uuid4().hex[:10]}"
    storage = Storage(sqlite_url)
    storage.migrate()
    try:
        create_subscription(storage, channel="kafka", target=topic)
        ident = insert_alert(storage)
        with PostProducer(kafka_settings) as producer:
            _deliver_all(storage, Notifier(storage, {"kafka": KafkaChannel(producer)}, POLICY))
        records = read_topic(kafka_settings, topic, 1)
        with storage.begin() as conn:
            stored = conn.execute(sa.select(tables.deliveries)).mappings().one()
    finally:
        storage.dispose()
    assert len(records) == 1
    import json

    body = json.loads(records[0].value)
    assert (body["event"], body["alert"]["id"], body["delivery_id"]) == ("fired", ident, stored["id"])
    assert records[0].key == b"ACME"
    assert dict(records[0].headers)["X-Finpulse-Delivery"] == stored["id"].encode()
    assert stored["status"] == "delivered"


CRASHING_NOTIFIER = """
import os, sys
from datetime import timedelta
from finpulse.storage import Storage
from monitor.notifiers.webhook import WebhookChannel
from monitor.notifiers.worker import Notifier, NotifierPolicy

storage = Storage(sys.argv[1])
policy = NotifierPolicy(workers=1, lease=timedelta(seconds=1))
# The receiver has acknowledged the delivery; die before it is marked delivered.
notifier = Notifier(storage, {"webhook": WebhookChannel(10)}, policy,
                    after_send=lambda delivery: os._exit(17))
notifier.run_once()
notifier.drain(30)
sys.exit(0)
"""


def test_a_crash_between_send_and_mark_loses_nothing_and_keeps_the_id(database_url: str) -> None:
    storage = Storage(database_url)
    storage.migrate()
    try:
        with Receiver() as receiver:
            create_subscription(storage, channel="webhook", target=receiver.url)
            insert_alert(storage)
            crashed = subprocess.run([sys.executable, "-c", CRASHING_NOTIFIER, database_url], check=False,
                                     cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"},
                                     capture_output=True, text=True, timeout=120)
            assert crashed.returncode == 17, crashed.stderr
            assert len(receiver.requests) == 1
            with storage.begin() as conn:
                row = conn.execute(sa.select(tables.deliveries)).mappings().one()
            assert (row["status"], row["attempts"]) == ("pending", 1)

            # A restarted notifier sends it again once the dead one's lease lapsed.
            restarted = Notifier(storage, {"webhook": WebhookChannel(10)},
                                 NotifierPolicy(workers=1, lease=timedelta(seconds=1)))
            _deliver_all(storage, restarted)
            assert len(receiver.requests) == 2
            (first_headers, first_body), (second_headers, second_body) = receiver.requests
            # Same delivery id and the same signed bytes: the receiver recognises the repeat.
            assert set(receiver.delivery_ids) == {row["id"]}
            assert first_body == second_body
            assert first_headers["X-Finpulse-Signature"] == second_headers["X-Finpulse-Signature"]
        with storage.begin() as conn:
            final = conn.execute(sa.select(tables.deliveries)).mappings().one()
        assert (final["status"], final["attempts"]) == ("delivered", 2)
    finally:
        storage.dispose()

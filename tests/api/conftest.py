"""A seeded database and the API over it, on SQLite and PostgreSQL.

The data: two days of calm ACME and BETA posts with a burst of negative ACME posts (so
aggregates and alerts exist), one key per role, one revoked key, one subscription.
Module-scoped: seeding runs the real aggregation and rules once per database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from finpulse.api import create_app
from finpulse.metrics import Metrics
from finpulse.settings import Settings
from finpulse.storage import Storage
from finpulse.storage.keys import create_key, revoke_key
from finpulse.storage.retraining import finish_run, start_run
from finpulse.storage.subscriptions import create_subscription
from tests.conftest import POSTGRES_ADMIN_URL
from tests.monitor.receivers import burst, calm, run


@dataclass
class Api:
    storage: Storage
    client: TestClient
    keys: dict[str, str]
    registry: CollectorRegistry
    app: Any

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


def seed(storage: Storage) -> dict[str, str]:
    run(storage, calm("ACME", [h for h in range(48) if h != 30]) + burst("ACME", 30)
        + calm("BETA", range(48)))
    keys = {role: create_key(storage, role, f"{role}-key")[1] for role in ("reader", "analyst", "admin")}
    revoked, keys["revoked"] = create_key(storage, "admin", "old-key")
    revoke_key(storage, revoked.id)
    create_subscription(storage, channel="webhook", target="http://127.0.0.1:9/hook", name="seeded")
    # A finished retraining run and one in progress.
    metrics = {"n": 2, "accuracy": 0.5, "macro_f1": 0.4,
               "per_class": {"neutral": {"precision": 0.5, "recall": 1.0, "f1": 0.67, "support": 1}}}
    finish_run(storage, start_run(storage, champion="v1", trigger="schedule"),
               decision="rejected", reason="not better on held-back feedback", seconds=61.0,
               challenger="v2", counts={"replay": 10, "feedback": 2},
               gold={"champion": metrics, "challenger": metrics}, feedback={})
    start_run(storage, champion="v1", trigger="model_health:low_confidence:news:1h:2026-11-30T10:00Z")
    return keys


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request, tmp_path_factory) -> Iterator[Api]:
    admin = None
    name = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'finpulse.db'}"
    else:
        name = f"finpulse_test_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    storage = Storage(url)
    storage.migrate()
    try:
        keys = seed(storage)
        registry = CollectorRegistry()
        settings = Settings(database_url=url, api={"default_limit": 20, "max_limit": 200})
        app = create_app(storage, settings, Metrics(registry))
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Api(storage, client, keys, registry, app)
    finally:
        storage.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

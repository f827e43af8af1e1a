"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine); check what can be.

Every FINPULSE_* variable the stack sets must be a setting finpulse accepts, the scorer
must point at the Kafka service's internal listener, and the image must contain every package.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from finpulse.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def finpulse_services() -> list[str]:
    return [name for name, svc in SERVICES.items() if "build" in svc]


def test_stack_has_kraft_kafka_postgres_and_the_services():
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert {"scorer", "monitor", "migrate"} <= set(finpulse_services())


@pytest.mark.parametrize("name", finpulse_services())
def test_service_environment_is_valid_settings(name, monkeypatch):
    env = SERVICES[name]["environment"]
    for key in list(os.environ):
        if key.startswith("FINPULSE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        assert key.startswith("FINPULSE_"), key
        monkeypatch.setenv(key, str(value))
    settings = Settings.load()
    host, port = settings.kafka.bootstrap_servers.split(":")
    listeners = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT://{host}:{port}" in listeners
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in settings.database_url
    command = SERVICES[name]["command"]
    assert command[0] in {"scorer", "monitor", "db"}


def test_image_contains_every_package():
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) ", dockerfile, flags=re.M))
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r'include = \[(.*?)\]', pyproject).group(1)
    wanted = {p.strip(' "*') for p in packages.split(",")}
    assert wanted <= copied

from __future__ import annotations

import pytest

from finpulse.errors import ConfigError
from finpulse.settings import Settings


def test_defaults_have_no_broker_and_a_sqlite_database(monkeypatch):
    monkeypatch.delenv("FINPULSE_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    settings = Settings.load()
    assert settings.kafka.bootstrap_servers is None
    assert settings.database_url.startswith("sqlite:///")
    assert settings.kafka.raw_topics == ("finpulse.news", "finpulse.social")


def test_environment_overrides_file_and_sections_merge(tmp_path, monkeypatch):
    config = tmp_path / "finpulse.yaml"
    config.write_text(
        "database_url: sqlite:///from-file.db\n"
        "kafka:\n  group_id: from-file\n  bootstrap_servers: file:9092\n"
        "scorer:\n  max_batch_size: 7\n"
    )
    monkeypatch.setenv("FINPULSE_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    settings = Settings.load(config)
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.kafka.group_id == "from-file"
    assert settings.scorer.max_batch_size == 7
    assert settings.database_url == "sqlite:///from-file.db"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("scorer:\n  max_batch_size: 0\n", "scorer.max_batch_size"),
        ("model:\n  device: tpu\n", "model.device"),
        ("unknown_section: 1\n", "unknown_section"),
    ],
)
def test_invalid_values_name_the_field(tmp_path, text, field):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        Settings.load(config)
    assert info.value.field == field
    assert field in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Settings.load(tmp_path / "nope.yaml")


def test_passwords_are_secret():
    settings = Settings.load(kafka={"sasl_password": "hunter2"})
    assert "hunter2" not in repr(settings)
    assert settings.kafka.sasl_password.get_secret_value() == "hunter2"

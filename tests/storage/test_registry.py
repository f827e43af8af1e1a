"""The model registry: register, promote, roll back (SQLite + PostgreSQL)."""

from __future__ import annotations

import pytest

from finpulse.errors import ConfigError
from finpulse.storage import Storage
from finpulse.storage.registry import ModelRegistry


def _register(registry: ModelRegistry, version: str, **kw) -> None:
    registry.register(
        version,
        base="all-MiniLM-L6-v2",
        method="lora",
        metrics={"macro_f1": 0.8, "per_class": {"negative": {"f1": 0.7}}},
        artifact_path=f"/models/{version}",
        **kw,
    )


def test_register_is_idempotent_and_round_trips(storage: Storage) -> None:
    registry = ModelRegistry(storage)
    _register(registry, "v1", trainable_params=12345)
    _register(registry, "v1")
    (v1,) = registry.list()
    assert (v1.version, v1.status, v1.method, v1.trainable_params) == (
        "v1",
        "challenger",
        "lora",
        12345,
    )
    assert v1.metrics["per_class"]["negative"]["f1"] == 0.7
    assert registry.champion() is None


def test_promote_retires_the_old_champion(storage: Storage) -> None:
    registry = ModelRegistry(storage)
    _register(registry, "v1", status="champion")
    _register(registry, "v2")
    assert registry.champion().version == "v1"
    registry.promote("v2")
    registry.promote("v2")  # already champion: nothing changes
    statuses = {m.version: m.status for m in registry.list()}
    assert statuses == {"v1": "retired", "v2": "champion"}


def test_rollback_steps_back_through_earlier_champions(storage: Storage) -> None:
    registry = ModelRegistry(storage)
    for version in ("v1", "v2", "v3"):
        _register(registry, version)
        registry.promote(version)
    assert registry.rollback().version == "v2"
    assert registry.get("v3").retired_reason == "rolled_back"
    assert registry.rollback().version == "v1"  # further back, not back to v3
    assert {m.version: m.status for m in registry.list()} == {
        "v1": "champion",
        "v2": "retired",
        "v3": "retired",
    }
    with pytest.raises(ConfigError, match="no earlier champion"):
        registry.rollback()
    registry.promote("v3")  # an explicit promote brings a rolled-back version back
    assert registry.champion().version == "v3"


def test_unknown_versions_and_statuses_are_config_errors(storage: Storage) -> None:
    registry = ModelRegistry(storage)
    with pytest.raises(ConfigError, match="unknown model version 'v9'"):
        registry.promote("v9")
    with pytest.raises(ConfigError, match="status"):
        _register(registry, "v1", status="retired")

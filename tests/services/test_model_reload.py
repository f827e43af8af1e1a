"""The scorer follows the registry's champion, and never swaps in a model that fails to load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from finpulse.services.scorer import ModelReloader
from finpulse.settings import Settings
from finpulse.storage import Storage
from finpulse.storage.registry import ModelRegistry
from models.artifact import read_manifest, update_manifest
from models.inference import SentimentEngine
from tests.models.tiny import build_tiny_base, make_rows, write_csv


def train_tiny(directory: Path, base: Path, data: Path, seed: int) -> Path:
    from models.train import TrainConfig, train

    config = TrainConfig(data=[str(data)], base=str(base), method="lora", epochs=1, lr=5e-3,
                         head_lr=1e-2, batch_size=32, max_length=32, lora_r=4, lora_alpha=8,
                         seed=seed, progress=False, autocast="off")
    train(config, directory, device="cpu")
    return directory


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reload")
    base = build_tiny_base(root / "base")
    data = write_csv(root / "data.csv", make_rows(200, seed=3))
    return train_tiny(root / "a", base, data, seed=1), train_tiny(root / "b", base, data, seed=2)


def register(registry: ModelRegistry, path: Path) -> str:
    manifest = read_manifest(path)
    registry.register(manifest["version"], base=manifest["base"], method=manifest["method"],
                      metrics=manifest["metrics"], artifact_path=str(path),
                      trainable_params=manifest["trainable_params"])
    return manifest["version"]


def test_scorer_follows_champion_and_keeps_its_model_when_the_new_one_is_corrupt(
    artifacts, sqlite_url, tmp_path, caplog
):
    first, second = artifacts
    storage = Storage(sqlite_url)
    storage.migrate()
    registry = ModelRegistry(storage)
    settings = Settings.load(database_url=sqlite_url, model={"device": "cpu", "dtype": "float32"})
    registry.promote(register(registry, first))
    reloader = ModelReloader(settings, registry, interval_s=3600)

    engine = reloader.initial()
    assert engine.version == read_manifest(first)["version"]

    # A champion whose weights were damaged on disk: detected, logged, not used.
    corrupt = tmp_path / "corrupt"
    shutil.copytree(second, corrupt)
    update_manifest(corrupt, version="corrupt-copy")
    weights = next(p for p in corrupt.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-64] + bytes(64))
    registry.promote(register(registry, corrupt))
    assert reloader.maybe_reload(engine, force=True) is engine
    assert "corrupt-copy failed to load" in caplog.text
    # ...and it is not retried on every check.
    assert reloader.maybe_reload(engine, force=True) is engine

    registry.promote(register(registry, second))
    swapped = reloader.maybe_reload(engine, force=True)
    assert swapped.version == read_manifest(second)["version"]
    texts = ["profit rise record", "loss plunge lawsuit", "company said board meeting"]
    direct = SentimentEngine.load(second, device="cpu", dtype="float32")
    assert swapped.predict(texts) == direct.predict(texts)

    # Rolling back re-instates the corrupt one first: still refused, the scorer stays put.
    registry.rollback()
    assert registry.champion().version == "corrupt-copy"
    assert reloader.maybe_reload(swapped, force=True) is swapped
    # One more step back reaches the first model, which loads.
    registry.rollback()
    assert reloader.maybe_reload(swapped, force=True).version == engine.version
    storage.dispose()


def test_checks_are_rate_limited(artifacts, sqlite_url):
    first, second = artifacts
    storage = Storage(sqlite_url)
    storage.migrate()
    registry = ModelRegistry(storage)
    registry.promote(register(registry, first))
    reloader = ModelReloader(Settings.load(database_url=sqlite_url, model={"dtype": "float32"}),
                             registry, interval_s=3600)
    engine = reloader.initial()
    assert reloader.maybe_reload(engine) is engine  # first check: nothing new
    registry.promote(register(registry, second))
    assert reloader.maybe_reload(engine) is engine  # within the interval: not checked
    assert reloader.maybe_reload(engine, force=True).version == read_manifest(second)["version"]
    storage.dispose()

"""The scorer follows the registry's champion, and never swaps in a model that fails to load."""

from __future__ import annotations

import logging
import shutil
import time
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


def following(database_url: str, champion: Path,
              **options: bool) -> tuple[Storage, ModelRegistry, ModelReloader]:
    """A migrated database whose registry's champion is ``champion``, and a reloader that
    follows it (fp32 on the CPU, checks only when forced or every hour)."""
    storage = Storage(database_url)
    storage.migrate()
    registry = ModelRegistry(storage)
    registry.promote(register(registry, champion))
    settings = Settings.load(database_url=database_url,
                             model={"device": "cpu", "dtype": "float32"})
    return storage, registry, ModelReloader(settings, registry, interval_s=3600, **options)


def corrupt_copy(artifact: Path, directory: Path) -> Path:
    """A copy of ``artifact`` as version ``corrupt-copy`` whose weights were damaged on disk."""
    shutil.copytree(artifact, directory)
    update_manifest(directory, version="corrupt-copy")
    weights = next(p for p in directory.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-64] + bytes(64))
    return directory


def test_scorer_follows_champion_and_keeps_its_model_when_the_new_one_is_corrupt(
    artifacts, sqlite_url, tmp_path, caplog
):
    first, second = artifacts
    storage, registry, reloader = following(sqlite_url, first)

    engine = reloader.initial()
    assert engine.version == read_manifest(first)["version"]

    # A champion whose weights were damaged on disk: detected, logged, not used.
    corrupt = corrupt_copy(second, tmp_path / "corrupt")
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
    storage, registry, reloader = following(sqlite_url, first)
    engine = reloader.initial()
    assert reloader.maybe_reload(engine) is engine  # first check: nothing new
    registry.promote(register(registry, second))
    assert reloader.maybe_reload(engine) is engine  # within the interval: not checked
    assert reloader.maybe_reload(engine, force=True).version == read_manifest(second)["version"]
    storage.dispose()


def _first_other(reloader: ModelReloader, current, deadline_s: float = 120.0):
    """Check (force) until the reloader hands back something other than ``current``, or give up."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        engine = reloader.maybe_reload(current, force=True)
        if engine is not current:
            return engine
        time.sleep(0.05)
    return current


def test_the_scorer_loads_a_new_champion_in_the_background(artifacts, sqlite_url, tmp_path,
                                                           caplog):
    """The scorer's reloader (``background=True``): the check that sees a new champion starts
    loading it and returns the running model; a later check switches. A champion that fails
    to load is reported once and never replaces the running model."""
    caplog.set_level(logging.INFO, logger="finpulse.services.reloader")
    first, second = artifacts
    storage, registry, reloader = following(sqlite_url, first, background=True)
    engine = reloader.initial()

    corrupt = corrupt_copy(second, tmp_path / "corrupt")
    registry.promote(register(registry, corrupt))
    assert reloader.maybe_reload(engine, force=True) is engine  # loading has only started
    texts = ["profit rise record", "loss plunge lawsuit"]
    assert [p.label for p in engine.predict(texts)]  # the running model keeps scoring
    deadline = time.monotonic() + 60
    while "corrupt-copy failed to load" not in caplog.text and time.monotonic() < deadline:
        assert reloader.maybe_reload(engine, force=True) is engine
        time.sleep(0.05)
    assert "corrupt-copy failed to load" in caplog.text
    assert reloader.maybe_reload(engine, force=True) is engine
    assert caplog.text.count("loading new champion corrupt-copy") == 1  # not retried

    registry.promote(register(registry, second))
    assert reloader.maybe_reload(engine, force=True) is engine
    swapped = _first_other(reloader, engine)
    assert swapped.version == read_manifest(second)["version"]
    direct = SentimentEngine.load(second, device="cpu", dtype="float32")
    assert swapped.predict(texts) == direct.predict(texts)
    storage.dispose()

"""Shadow mode in the scorer: the registry's shadow version scores the live stream beside the
champion, its scores are stored apart and measured, and it can never cost a live score.

Real broker, real tiny models, real SQLite; the only wrappers are around a real engine (one
that raises, as a broken model would)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from finpulse.errors import ModelError
from finpulse.metrics import Metrics
from finpulse.services.reloader import ModelReloader
from finpulse.services.scorer import ScorerService
from finpulse.services.shadow import ShadowMode
from finpulse.settings import KafkaSettings, Settings
from finpulse.storage import Storage
from finpulse.storage.comparison import shadow_report
from finpulse.storage.registry import ModelRegistry
from finpulse.storage.versions import versions_of_scores
from ingest.producer import PostProducer
from ingest.topics import ensure_topics
from models.artifact import read_manifest, update_manifest
from models.inference import SentimentEngine
from tests.e2e.posts import calm_then_burst
from tests.models.tiny import build_tiny_base, make_rows, write_csv
from tests.services.test_model_reload import register, train_tiny

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shadow")
    base = build_tiny_base(root / "base")
    data = write_csv(root / "data.csv", make_rows(200, seed=3))
    return train_tiny(root / "a", base, data, seed=1), train_tiny(root / "b", base, data, seed=2)


def settings_for(kafka: KafkaSettings, url: str) -> Settings:
    return Settings.load(
        database_url=url, kafka=kafka.model_dump(), metrics={"enabled": False},
        model={"device": "cpu", "dtype": "float32"},
        scorer={"max_batch_size": 16, "max_wait_ms": 50},
    )


def publish_stream(settings: Settings) -> list:
    baseline, burst = calm_then_burst(hours=3)
    posts = baseline + burst
    ensure_topics(settings.kafka)
    with PostProducer(settings.kafka) as producer:
        for post in posts:
            producer.publish_post(post)
        producer.flush()
    return posts


class BrokenModel:
    """A real engine whose every call raises, as a model with a bug would."""

    def __init__(self, engine: SentimentEngine) -> None:
        self.version, self.manifest = "broken-shadow", engine.manifest

    def predict(self, texts, *, sources=None):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_scorer_runs_the_registry_shadow_beside_the_champion(artifacts, kafka_settings, sqlite_url):
    first, second = artifacts
    settings = settings_for(kafka_settings, sqlite_url)
    storage = Storage(sqlite_url)
    storage.migrate()
    models = ModelRegistry(storage)
    champion, challenger = register(models, first), register(models, second)
    models.promote(champion)
    models.set_shadow(challenger)
    posts = publish_stream(settings)
    reloader = ModelReloader(settings, models, interval_s=3600)
    registry = CollectorRegistry()
    service = ScorerService(settings, engine=reloader.initial(), storage=storage,
                            metrics=Metrics(registry), reloader=reloader)
    try:
        stats = service.run(threading.Event(), until_consumed=len(posts))
    finally:
        service.close()

    assert stats.scored == len(posts)
    assert versions_of_scores(storage) == {champion: {"live": len(posts)},
                                           challenger: {"shadow": len(posts)}}
    # The live scores are the champion's own, exactly as it scores alone.
    live = {p.id: p for p in storage.scores(limit=10_000)}
    direct = SentimentEngine.load(first, device="cpu", dtype="float32")
    texts = [p.text for p in posts]
    for post, prediction in zip(posts, direct.predict(texts), strict=True):
        assert live[post.id].label == prediction.label
        assert live[post.id].model_version == champion
    # Metrics and the stored report tell the same story, per source.
    report = {r["source"]: r for r in shadow_report(storage)}
    assert set(report) == {"news", "social"}
    for source, row in report.items():
        agreed = sample(registry, "finpulse_scorer_shadow_scored_total", source=source, agree="true")
        disagreed = sample(registry, "finpulse_scorer_shadow_scored_total", source=source, agree="false")
        assert agreed + disagreed == row["n"]
        assert agreed == pytest.approx(row["agreement"] * row["n"])
        for role, side in (("champion", "live"), ("shadow", "shadow")):
            labels = {"role": role, "source": source}
            assert sample(registry, "finpulse_scorer_confidence_ratio_count", **labels) == row["n"]
            assert sample(registry, "finpulse_scorer_confidence_ratio_sum", **labels) == pytest.approx(
                row[side]["mean_confidence"] * row["n"])
    assert sum(r["n"] for r in report.values()) == len(posts)
    assert registry.get_sample_value("finpulse_scorer_shadow_model_info", {"version": challenger}) == 1
    assert sample(registry, "finpulse_scorer_shadow_inference_latency_seconds_count") >= 1
    assert all(sample(registry, "finpulse_scorer_shadow_failures_total", stage=stage) == 0
               for stage in ("load", "score", "store"))
    storage.dispose()


def test_a_shadow_model_that_raises_costs_no_champion_score(artifacts, kafka_settings, sqlite_url):
    first, _ = artifacts
    settings = settings_for(kafka_settings, sqlite_url)
    storage = Storage(sqlite_url)
    storage.migrate()
    posts = publish_stream(settings)
    engine = SentimentEngine.load(first, device="cpu", dtype="float32")
    registry = CollectorRegistry()
    service = ScorerService(settings, engine=engine, storage=storage, metrics=Metrics(registry),
                            shadow=BrokenModel(engine))  # type: ignore[arg-type]
    try:
        stats = service.run(threading.Event(), until_consumed=len(posts))
    finally:
        service.close()
    assert stats.scored == len(posts) and stats.invalid == 0
    assert versions_of_scores(storage) == {engine.version: {"live": len(posts)}}
    assert sample(registry, "finpulse_scorer_shadow_failures_total", stage="score") == stats.batches
    assert sample(registry, "finpulse_scorer_posts_scored_total") == len(posts)
    assert sample(registry, "finpulse_scorer_faults_total", kind="internal") == 0
    assert registry.get_sample_value("finpulse_scorer_consumer_lag_messages") == 0
    storage.dispose()


def test_the_reloader_follows_the_shadow_flag_and_skips_a_broken_one(artifacts, sqlite_url, tmp_path):
    first, second = artifacts
    storage = Storage(sqlite_url)
    storage.migrate()
    models = ModelRegistry(storage)
    settings = Settings.load(database_url=sqlite_url, model={"device": "cpu", "dtype": "float32"})
    champion, challenger = register(models, first), register(models, second)
    models.promote(champion)
    reloader = ModelReloader(settings, models, interval_s=3600)

    assert reloader.maybe_reload_shadow(None, champion, force=True) is None
    models.set_shadow(challenger)
    assert reloader.maybe_reload_shadow(None, champion) is None  # within the interval: not checked
    shadow = reloader.maybe_reload_shadow(None, champion, force=True)
    assert shadow is not None and shadow.version == challenger
    assert reloader.maybe_reload_shadow(shadow, champion, force=True) is shadow
    # The shadow version promoted: the flag is cleared, and it would only score twice anyway.
    assert reloader.maybe_reload_shadow(shadow, challenger, force=True) is None

    # A flagged version whose weights are damaged: counted once, then left alone.
    corrupt = tmp_path / "corrupt"
    shutil.copytree(second, corrupt)
    update_manifest(corrupt, version="corrupt-shadow")
    weights = next(p for p in corrupt.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-64] + bytes(64))
    models.set_shadow(register(models, corrupt))
    with pytest.raises(ModelError):
        reloader.maybe_reload_shadow(shadow, champion, force=True)
    assert reloader.maybe_reload_shadow(shadow, champion, force=True) is None

    registry = CollectorRegistry()
    mode = ShadowMode(Metrics(registry), shadow)
    models.set_shadow(None)
    mode.follow(reloader, champion)  # within the interval: kept
    assert mode.engine is shadow
    reloader = ModelReloader(settings, models, interval_s=0)
    mode.follow(reloader, champion)
    assert mode.engine is None
    assert registry.get_sample_value("finpulse_scorer_shadow_model_info", {"version": ""}) == 1
    models.set_shadow("corrupt-shadow")
    mode.follow(reloader, champion)
    assert mode.engine is None
    assert sample(registry, "finpulse_scorer_shadow_failures_total", stage="load") == 1
    assert read_manifest(second)["version"] == challenger
    storage.dispose()

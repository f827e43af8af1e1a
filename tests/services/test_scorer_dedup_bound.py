"""The scorer's in-memory near-duplicate index stays within ``scorer.dedup_max_posts``.

The index is the one part of a scorer's memory that grows with traffic (~4.3 KB a post), so
its bound is what keeps a long-running scorer's RSS flat. Real broker, tiny model, SQLite.
"""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

from finpulse.metrics import Metrics
from finpulse.services.scorer import ScorerService
from finpulse.settings import KafkaSettings, Settings
from finpulse.storage import Storage
from models.inference import SentimentEngine
from tests.models.tiny import build_tiny_base, make_rows, write_csv
from tests.services.test_model_reload import train_tiny
from tests.services.test_shadow import publish_stream

pytestmark = pytest.mark.timeout(300)


def test_the_index_keeps_at_most_dedup_max_posts(tmp_path, kafka_settings: KafkaSettings,
                                                 sqlite_url: str) -> None:
    base = build_tiny_base(tmp_path / "base")
    model = train_tiny(tmp_path / "model", base, write_csv(tmp_path / "data.csv",
                                                           make_rows(120, seed=4)), seed=1)
    settings = Settings.load(
        database_url=sqlite_url, kafka=kafka_settings.model_dump(), metrics={"enabled": False},
        model={"device": "cpu", "dtype": "float32"},
        scorer={"max_batch_size": 16, "max_wait_ms": 50, "dedup_max_posts": 25})
    storage = Storage(sqlite_url)
    storage.migrate()
    posts = publish_stream(settings)
    assert len(posts) > 25
    service = ScorerService(settings, engine=SentimentEngine.load(model, device="cpu",
                                                                  dtype="float32"),
                            storage=storage, metrics=Metrics(CollectorRegistry()))
    try:
        stats = service.run(threading.Event(), until_consumed=len(posts))
    finally:
        service.close()
        storage.dispose()
    assert stats.scored == len(posts)
    assert len(service.dedup) == 25

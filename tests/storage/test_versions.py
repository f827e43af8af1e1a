"""Scores beside the live ones: shadow and rescored scores never reach what is live; the
shadow report's figures; one version's views; the registry's shadow flag. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from finpulse.errors import ConfigError
from finpulse.schemas import ScoredPost
from finpulse.services.monitor import MonitorService
from finpulse.storage import Storage
from finpulse.storage import tables as t
from finpulse.storage.comparison import shadow_report
from finpulse.storage.history import search_posts, sentiment_series
from finpulse.storage.registry import ModelRegistry
from finpulse.storage.versions import (
    count_to_rescore,
    known_version,
    posts_to_rescore,
    save_rescored,
    version_series,
    versions_of_scores,
)
from monitor.rules import RuleSet
from tests.conftest import POSTGRES_ADMIN_URL
from tests.records import T0, scored

H = timedelta(hours=1)
M = timedelta(minutes=1)
CALM = (0.3, 0.1, -0.1, 0.2, -0.5, 0.0)
RULES = """\
rules:
  - {name: drop, kind: sentiment_drop, window: 1h}
  - {name: negatives, kind: negative_volume_spike, window: 1h, warmup: 6h}
  - {name: risk, kind: risk_event, phrases: [fraud, recall]}
  - {name: drift, kind: model_health, check: label_drift, min_posts: 10,
     min_reference_posts: 50, reference: 12h, cooldown: 1h}
  - {name: unsure, kind: model_health, check: low_confidence, min_posts: 10,
     low_confidence: 0.5, max_share: 0.3, test: chi2}
"""
FLIP = {"negative": "positive", "neutral": "negative", "positive": "negative"}


def history() -> list[ScoredPost]:
    """Two days of calm ACME and BETA, an ACME fraud burst at 30 h, a BETA recall at 40 h,
    an hour the model was unsure of (20 h), and GAMMA ending a recall (good news)."""
    posts = [
        scored(f"{t}-{h}-{i}", h * H + (5 + 9 * i) * M, (t,), s,
               confidence=0.4 if h == 20 else 0.8)
        for t in ("ACME", "BETA")
        for h in range(48)
        for i, s in enumerate(CALM)
    ]
    posts += [
        scored(f"ACME-bad-{i}", 30 * H + (2 + 4 * i) * M, ("ACME",), -0.8 - 0.01 * i,
               text=f"ACME fraud probe widens, report {i}")
        for i in range(12)
    ]
    posts.append(scored("BETA-recall", 40 * H + 3 * M, ("BETA",), -0.9,
                        text="BETA announces recall of its flagship product"))
    posts += [scored(f"GAMMA-{i}", 44 * H + i * M, ("GAMMA",), 0.7,
                     text=f"GAMMA ends recall early, sales recover {i}") for i in range(3)]
    return posts


def disagreeing(posts: list[ScoredPost], version: str) -> list[ScoredPost]:
    """Another model's scores of the same posts: the other label every time, sure of itself,
    and scored at the same time under a version that sorts after the live one (so a reader
    taking "the latest score" would pick it if it could see it)."""
    return [
        p.model_copy(update={
            "label": FLIP[p.label], "score": -p.score if p.score else -0.9, "confidence": 0.99,
            "probabilities": {"negative": 0.99 if FLIP[p.label] == "negative" else 0.0,
                              "neutral": 0.01,
                              "positive": 0.99 if FLIP[p.label] == "positive" else 0.0},
            "model_version": version,
        })
        for p in posts
    ]


@pytest.fixture()
def twin(storage: Storage, tmp_path: Path) -> Iterator[Storage]:
    """A second migrated, empty database of the same kind as ``storage``."""
    admin, name = None, None
    if storage.dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'twin.db'}"
    else:
        name = f"finpulse_test_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    other = Storage(url)
    other.migrate()
    try:
        yield other
    finally:
        other.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def live_state(storage: Storage) -> dict[str, Any]:
    """Everything a live reader produced or reads, without wall-clock columns."""
    with storage.begin() as conn:
        aggregates = [
            {k: v for k, v in row.items() if k != "updated_at"}
            for row in conn.execute(sa.select(t.aggregates).order_by(
                t.aggregates.c.ticker, t.aggregates.c.window_size, t.aggregates.c.window_start
            )).mappings()
        ]
        evidence = conn.execute(sa.select(t.alert_posts).order_by(
            t.alert_posts.c.alert_id, t.alert_posts.c.rank)).all()
        dirty = conn.execute(sa.select(sa.func.count()).select_from(t.dirty_windows)).scalar_one()
    return {
        "alerts": storage.alerts(),
        "evidence": evidence,
        "aggregates": aggregates,
        "dirty": dirty,
        "scores": storage.scores(limit=100_000),
        "posts page": search_posts(storage, limit=1000).items,
        "series": sentiment_series(storage, "ACME", "1h", limit=1000).items,
    }


def test_shadow_and_rescored_scores_never_reach_anything_live(
    storage: Storage, twin: Storage, tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    rules = RuleSet.load(rules_file)
    posts = history()
    # One database without a shadow model, one with a shadow model that disagrees on everything.
    storage.save_scored(posts)
    twin.save_scored(posts, shadow=disagreeing(posts, "v9-shadow"))
    assert versions_of_scores(twin) == {"v1": {"live": len(posts)},
                                        "v9-shadow": {"shadow": len(posts)}}
    assert live_state(twin)["dirty"] == live_state(storage)["dirty"] > 0

    plain = MonitorService(storage, rules).run_once()
    shadowed = MonitorService(twin, rules).run_once()
    fired = {(a.rule, a.ticker) for a in plain.fired}
    # The scenario exercises every kind of rule, so a leak anywhere would show.
    assert {("drop", "ACME"), ("negatives", "ACME"), ("risk", "ACME"), ("risk", "BETA"),
            ("unsure", "news"), ("drift", "news")} <= fired
    assert ("risk", "GAMMA") not in fired
    assert shadowed.fired == plain.fired
    assert live_state(twin) == live_state(storage)

    # Rescoring afterwards (another disagreeing version) changes nothing live either, and
    # leaves no work for the monitor.
    assert save_rescored(twin, disagreeing(posts, "v8-rescore")) == len(posts)
    assert MonitorService(twin, rules).run_once().fired == []
    assert MonitorService(storage, rules).run_once().fired == []
    assert live_state(twin) == live_state(storage)
    assert versions_of_scores(twin)["v8-rescore"] == {"rescore": len(posts)}


def test_shadow_rows_the_database_refuses_lose_only_themselves(storage: Storage) -> None:
    posts = [scored(f"p{i}", i * M, ("ACME",), 0.5) for i in range(4)]
    # A shadow score for a post that is not stored: a foreign-key refusal in the savepoint.
    stray = scored("not-stored", 9 * M, ("ACME",), 0.5, version="v2")
    refused: list[Exception] = []
    assert storage.save_scored(posts, shadow=[stray], on_shadow_error=refused.append) == 4
    assert len(refused) == 1
    assert versions_of_scores(storage) == {"v1": {"live": 4}}
    # Without a callback it is logged, and the live scores are kept all the same.
    more = [scored(f"q{i}", i * M, ("ACME",), 0.5) for i in range(3)]
    assert storage.save_scored(more, shadow=[*disagreeing(more, "v2"), stray]) == 3
    assert versions_of_scores(storage) == {"v1": {"live": 7}}


def test_shadow_scores_of_a_post_stored_with_other_content_are_skipped(storage: Storage) -> None:
    first = scored("same-id", M, ("ACME",), 0.5)
    storage.save_scored([first])
    other = scored("same-id", M, ("ACME",), 0.5, text="other text", version="v2")
    assert storage.save_scored([other], shadow=disagreeing([other], "v3")) == 0
    assert versions_of_scores(storage) == {"v1": {"live": 1}}


def _report_posts() -> tuple[list[ScoredPost], list[ScoredPost]]:
    """Six news and four social posts; the shadow agrees on 4 of 6 news and 1 of 4 social."""
    live, shadow = [], []
    plan = [  # (source, live label, live confidence, shadow label, shadow confidence)
        ("news", "negative", 0.9, "negative", 0.7),
        ("news", "negative", 0.8, "negative", 0.6),
        ("news", "neutral", 0.7, "neutral", 0.5),
        ("news", "positive", 0.6, "positive", 0.9),
        ("news", "positive", 0.5, "neutral", 0.4),
        ("news", "neutral", 0.4, "negative", 0.8),
        ("social", "positive", 0.9, "positive", 0.3),
        ("social", "positive", 0.8, "negative", 0.5),
        ("social", "neutral", 0.6, "negative", 0.5),
        ("social", "negative", 0.5, "neutral", 0.5),
    ]
    for i, (source, label, confidence, shadow_label, shadow_confidence) in enumerate(plan):
        post = scored(f"r{i}", i * M, ("ACME",), 0.0, label=label, confidence=confidence)
        post = post.model_copy(update={"source": source})
        live.append(post)
        shadow.append(post.model_copy(update={"label": shadow_label,
                                              "confidence": shadow_confidence,
                                              "model_version": "v2"}))
    return live, shadow


def test_shadow_report_figures_on_a_known_set(storage: Storage) -> None:
    live, shadow = _report_posts()
    storage.save_scored(live, shadow=shadow)
    news, social = shadow_report(storage)
    assert news["version"] == social["version"] == "v2"
    assert news["source"] == "news" and news["n"] == 6
    assert news["agreement"] == pytest.approx(4 / 6)
    assert news["live_versions"] == ["v1"]
    assert news["live"]["mean_confidence"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.6 + 0.5 + 0.4) / 6)
    assert news["shadow"]["mean_confidence"] == pytest.approx((0.7 + 0.6 + 0.5 + 0.9 + 0.4 + 0.8) / 6)
    assert news["live"]["labels"] == pytest.approx({"negative": 2 / 6, "neutral": 2 / 6, "positive": 2 / 6})
    assert news["shadow"]["labels"] == pytest.approx({"negative": 3 / 6, "neutral": 2 / 6, "positive": 1 / 6})
    assert social["n"] == 4 and social["agreement"] == pytest.approx(1 / 4)
    assert social["live"]["labels"] == pytest.approx({"negative": 0.25, "neutral": 0.25, "positive": 0.5})
    assert social["shadow"]["labels"] == pytest.approx({"negative": 0.5, "neutral": 0.25, "positive": 0.25})
    assert social["shadow"]["mean_confidence"] == pytest.approx(0.45)

    # A post scored live twice (a newer champion after a redelivery) pairs with its latest live score.
    newer = live[4].model_copy(update={"label": "neutral", "confidence": 0.95, "model_version": "v1b",
                                       "scored_at": live[4].scored_at + H})
    storage.save_scored([newer])
    news, _ = shadow_report(storage)
    assert news["agreement"] == pytest.approx(5 / 6)
    assert news["live_versions"] == ["v1", "v1b"]

    # Filters: one version, a time range on when the shadow scores were stored.
    assert shadow_report(storage, version="v9") == []
    assert [r["source"] for r in shadow_report(storage, version="v2")] == ["news", "social"]
    with storage.begin() as conn:
        stored_at = conn.execute(sa.select(sa.func.max(t.scores.c.stored_at))).scalar_one()
    assert shadow_report(storage, since=stored_at + timedelta(seconds=1)) == []
    assert shadow_report(storage, until=stored_at - timedelta(days=1)) == []


def test_rescore_storage_is_idempotent_and_batched(storage: Storage) -> None:
    posts = [scored(f"p{i:02}", i * 10 * M, ("ACME",), (-0.6, 0.1, 0.6)[i % 3]) for i in range(30)]
    storage.save_scored(posts)
    dirty = _dirty(storage)
    since, until = T0 + 50 * M, T0 + 250 * M  # posts 5 .. 24
    assert count_to_rescore(storage, "v2", since, until) == 20
    seen: list[str] = []
    after = None
    while batch := posts_to_rescore(storage, "v2", since, until, after=after, limit=7):
        seen += [p.id for p in batch]
        after = (batch[-1].published_at, batch[-1].id)
        if len(seen) <= 7:  # store the first batch only: the rest stays to do
            save_rescored(storage, disagreeing([p for p in posts if p.id in seen], "v2"))
    assert seen == [f"p{i:02}" for i in range(5, 25)]
    assert count_to_rescore(storage, "v2", since, until) == 13
    todo = posts_to_rescore(storage, "v2", since, until, limit=100)
    assert [p.id for p in todo] == [f"p{i:02}" for i in range(12, 25)]
    assert save_rescored(storage, disagreeing([p for p in posts if 5 <= int(p.id[1:]) < 25], "v2")) == 13
    assert save_rescored(storage, disagreeing(posts[5:25], "v2")) == 0  # again: nothing new
    assert count_to_rescore(storage, "v2", since, until) == 0
    # A version's own live scores count as scored.
    assert count_to_rescore(storage, "v1", None, None) == 0
    # Rescored scores mark nothing for re-aggregation.
    assert _dirty(storage) == dirty


def _dirty(storage: Storage) -> list[Any]:
    with storage.begin() as conn:
        return conn.execute(sa.select(t.dirty_windows.c.ticker, t.dirty_windows.c.minute_start,
                                      t.dirty_windows.c.n)).all()


def test_version_views_compute_that_versions_numbers(storage: Storage) -> None:
    posts = [scored(f"p{i:02}", i * 7 * M, ("ACME", "BETA") if i % 4 == 0 else ("ACME",),
                    (-0.6, 0.1, 0.6, -0.3)[i % 4], confidence=0.5 + (i % 5) / 10) for i in range(60)]
    storage.save_scored(posts)
    from monitor.aggregation import aggregate

    aggregate(storage, ["1m", "1h"])
    # The live version's view equals the stored live aggregates.
    for window in ("1m", "1h"):
        live = sentiment_series(storage, "ACME", window, limit=1000).items
        mine = sentiment_series(storage, "acme", window, limit=1000, model="v1").items
        assert len(mine) == len(live) > 0
        for a, b in zip(live, mine, strict=True):
            assert a.keys() == b.keys()
            assert {k: v for k, v in b.items() if not isinstance(v, float)} == \
                   {k: v for k, v in a.items() if not isinstance(v, float)}
            assert [b[k] for k in b if isinstance(b[k], float)] == pytest.approx(
                [a[k] for k in a if isinstance(a[k], float)])

    # A rescored version: its own numbers, the live ones unchanged.
    live_1h = sentiment_series(storage, "ACME", "1h", limit=100).items
    flipped = disagreeing(posts[:30], "v2")
    save_rescored(storage, flipped)
    series = sentiment_series(storage, "ACME", "1h", model="v2", limit=100).items
    by_hour: dict[datetime, list[ScoredPost]] = {}
    for post in flipped:
        by_hour.setdefault(post.published_at.replace(minute=0, second=0), []).append(post)
    assert [p["start"] for p in series] == sorted(by_hour)
    for point in series:
        expected = by_hour[point["start"]]
        assert point["n"] == len(expected)
        assert point["n_negative"] == sum(p.label == "negative" for p in expected)
        assert point["mean_score"] == pytest.approx(sum(p.score for p in expected) / len(expected))
        assert point["weighted_score"] == pytest.approx(
            sum(p.score * p.confidence for p in expected) / sum(p.confidence for p in expected))
        assert point["volume"] == pytest.approx(len(expected) / 60)
    assert sentiment_series(storage, "ACME", "1h", limit=100).items == live_1h
    # Pages and bounds: windows starting in [since, until), as the live series.
    first = version_series(storage, "ACME", "1h", "v2", limit=2)
    rest = version_series(storage, "ACME", "1h", "v2", limit=100, cursor=first.next_cursor)
    assert [p["start"] for p in first.items + rest.items] == [p["start"] for p in series]
    assert rest.next_cursor is None
    bounded = version_series(storage, "ACME", "1h", "v2", since=T0 + 30 * M, until=T0 + 3 * H + M)
    assert [p["start"] for p in bounded.items] == [T0 + H, T0 + 2 * H, T0 + 3 * H]
    # Posts: the version's scores, labels filter them; the default view is live only.
    page = search_posts(storage, model="v2", limit=1000).items
    assert {p["id"] for p in page} == {p.id for p in flipped}
    assert {(p["model_version"], p["role"]) for p in page} == {("v2", "rescore")}
    assert {p["role"] for p in search_posts(storage, limit=1000).items} == {"live"}
    negatives = search_posts(storage, model="v2", label="negative", limit=1000).items
    assert {p["id"] for p in negatives} == {p.id for p in flipped if p.label == "negative"}
    assert known_version(storage, "v2") and known_version(storage, "v1")
    assert not known_version(storage, "nope")


def test_registry_shadow_flag(storage: Storage) -> None:
    registry = ModelRegistry(storage)
    for version in ("a", "b", "c"):
        registry.register(version, base="base", method="lora", metrics={}, artifact_path=f"/m/{version}")
    registry.promote("a")
    assert registry.shadow() is None
    assert registry.set_shadow("b") is None
    assert registry.shadow().version == "b" and registry.get("b").shadow
    assert registry.set_shadow("c") == "b"  # one shadow at a time
    assert [v.version for v in registry.list() if v.shadow] == ["c"]
    with pytest.raises(ConfigError, match="champion"):
        registry.set_shadow("a")
    with pytest.raises(ConfigError, match="unknown"):
        registry.set_shadow("zzz")
    registry.promote("c")  # promoting the shadow version ends its shadow run
    assert registry.shadow() is None and registry.champion().version == "c"
    registry.set_shadow("b")
    assert registry.set_shadow(None) == "b"
    assert registry.shadow() is None

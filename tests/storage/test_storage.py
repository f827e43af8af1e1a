"""Storage: migrations, idempotent writes, queries, errors (on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from finpulse.errors import ConfigError, StorageError
from finpulse.storage import Storage, normalize_url, tables
from finpulse.storage.database import MIGRATIONS_DIR
from tests.records import T0, scored

# The newest migration: every test database is migrated to it.
HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def test_migrate_twice_keeps_data(storage: Storage) -> None:
    storage.save_scored([scored("a", timedelta(minutes=1))])
    storage.migrate()
    storage.migrate()
    assert storage.revision() == HEAD
    assert storage.count_posts() == 1


def test_save_scored_is_idempotent(storage: Storage) -> None:
    batch = [
        scored("a", timedelta(minutes=1), ("ACME", "BETA"), -0.5),
        scored("b", timedelta(minutes=2)),
    ]
    assert storage.save_scored(batch) == 2
    assert storage.save_scored(batch) == 0
    assert storage.save_scored(batch + batch) == 0
    assert (storage.count_posts(), storage.count_scores()) == (2, 2)


def test_each_model_version_gets_its_own_score(storage: Storage) -> None:
    storage.save_scored([scored("a", timedelta(minutes=1), score=-0.5, version="v1")])
    assert storage.save_scored([scored("a", timedelta(minutes=1), score=0.4, version="v2")]) == 1
    assert (storage.count_posts(), storage.count_scores()) == (1, 2)
    assert {(s.model_version, s.score) for s in storage.scores()} == {("v1", -0.5), ("v2", 0.4)}


def test_a_batch_with_one_post_under_two_versions_stores_both(storage: Storage) -> None:
    batch = [scored("a", timedelta(0), version="v1"), scored("a", timedelta(0), version="v2")]
    assert storage.save_scored(batch) == 2
    assert storage.count_posts() == 1


def test_scores_round_trip_and_filter(storage: Storage) -> None:
    storage.save_scored(
        [
            scored("a", timedelta(minutes=1), ("ACME", "BETA"), -0.6, text="Acme and Beta warn"),
            scored("b", timedelta(minutes=5), ("BETA",), 0.5),
            scored("c", timedelta(hours=2), ("ACME",), 0.1),
        ]
    )
    everything = storage.scores()
    assert [s.id for s in everything] == ["c", "b", "a"]  # newest published first
    first = everything[-1]
    assert first.tickers == ("ACME", "BETA")
    assert first.published_at == T0 + timedelta(minutes=1)
    assert first.published_at.tzinfo is not None
    assert first.text == "Acme and Beta warn"
    assert first.probabilities["negative"] == pytest.approx(0.6)
    assert [s.id for s in storage.scores(ticker="beta")] == ["b", "a"]
    assert [
        s.id for s in storage.scores(since=T0 + timedelta(minutes=2), until=T0 + timedelta(hours=1))
    ] == ["b"]
    assert len(storage.scores(limit=2)) == 2


def test_times_in_other_zones_are_stored_as_the_same_instant(storage: Storage) -> None:
    from datetime import timezone

    tokyo = timezone(timedelta(hours=9))
    storage.save_scored([scored("a", (T0 + timedelta(hours=3)).astimezone(tokyo))])
    (back,) = storage.scores(
        since=T0 + timedelta(hours=3), until=T0 + timedelta(hours=3, seconds=1)
    )
    assert back.published_at == T0 + timedelta(hours=3)
    assert back.published_at.utcoffset() == timedelta(0)


def test_migrate_stamps_tables_created_without_alembic(database_url: str) -> None:
    storage = Storage(database_url)
    try:
        tables.metadata.create_all(storage.engine)
        storage.migrate()
        assert storage.revision() == HEAD
    finally:
        storage.dispose()


def test_revision_is_none_before_migrating(database_url: str) -> None:
    storage = Storage(database_url)
    try:
        assert storage.revision() is None
    finally:
        storage.dispose()


def test_database_errors_become_storage_errors_without_sql(database_url: str) -> None:
    storage = Storage(database_url)
    try:
        with pytest.raises(StorageError) as caught:
            storage.count_posts()  # never migrated: no such table
        assert "SELECT" not in str(caught.value)
        assert "posts" in str(caught.value)
    finally:
        storage.dispose()


def test_unreachable_postgres_is_a_storage_error() -> None:
    storage = Storage("postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2")
    with pytest.raises(StorageError, match="OperationalError"):
        storage.count_posts()
    storage.dispose()


def test_postgres_urls_use_psycopg() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Storage("nosuchdb://x")
    assert caught.value.field == "database_url"


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url: str) -> None:
    storage = Storage(sqlite_url)
    try:
        with storage.begin() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        storage.dispose()


AWKWARD_TEXTS = [
    'He said "sell", then \\ "buy" {a,b} (NULL)',
    "NULL",
    "",
    "line one\nline two\ttab, comma; semicolon",
    "emoji \U0001f4c9 and accents: Société Générale, Nestlé, 株式",
    "{\"json\": [1, 2]}",
    "x" * 20_000,
]


def test_a_batch_of_awkward_posts_reads_back_exactly(storage: Storage) -> None:
    """Quotes, backslashes, braces, commas, the word NULL, empty and long texts, no
    tickers and many: what goes in comes back (PostgreSQL sends them as arrays)."""
    tickers = [("ACME",), (), ("A", "B", "C", "D"), ("ACME",), ("BRK.B",), ("ACME",), ("ZZ",)]
    batch = [
        scored(f"awk-{i}", timedelta(minutes=i), tickers[i], score=0.3 - 0.1 * i, text=text)
        .model_copy(update={"title": None if i % 2 else f'title "{i}"', "author": "a\\b"})
        for i, text in enumerate(AWKWARD_TEXTS)
    ]
    assert storage.save_scored(batch) == len(batch)
    assert storage.save_scored(batch) == 0
    with storage.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(tables.posts))}
        ticker_rows = set(conn.execute(sa.select(tables.post_tickers.c.post_id,
                                                 tables.post_tickers.c.ticker)))
        scores = {r.post_id: r for r in conn.execute(sa.select(tables.scores))}
    for post in batch:
        row = rows[post.id]
        assert (row.text, row.title, row.author, tuple(row.tickers)) == (
            post.text, post.title, post.author, post.tickers)
        assert row.published_at == post.published_at
        assert scores[post.id].score == pytest.approx(post.score)
        assert scores[post.id].label == post.label and scores[post.id].role == "live"
    assert ticker_rows == {(p.id, ticker) for p in batch for ticker in p.tickers}


@pytest.mark.postgres
def test_a_value_too_long_for_its_column_is_refused_not_cut(postgres_url: str) -> None:
    """An author over the column's 200 characters fails the batch (nothing stored) rather
    than being silently shortened. PostgreSQL only: SQLite does not enforce VARCHAR lengths."""
    storage = Storage(postgres_url)
    try:
        storage.migrate()
        long_author = scored("long", timedelta(0)).model_copy(update={"author": "y" * 201})
        with pytest.raises(StorageError):
            storage.save_scored([scored("fine", timedelta(0)), long_author])
        assert storage.count_posts() == 0
    finally:
        storage.dispose()


def test_naive_datetimes_are_refused(storage: Storage) -> None:
    with pytest.raises(StorageError, match="naive datetime"):
        storage.scores(since=T0.replace(tzinfo=None))


def test_concurrent_migrations_do_not_collide(database_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stores = [Storage(database_url) for _ in range(3)]
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda s: s.migrate(), stores))
        assert {s.revision() for s in stores} == {HEAD}
    finally:
        for store in stores:
            store.dispose()


@pytest.mark.postgres
def test_postgres_plans_every_statement_for_its_parameters(postgres_url: str) -> None:
    """No cached generic plan on PostgreSQL.

    psycopg prepares a statement after its fifth run, and PostgreSQL may then keep a generic
    plan for it. On a 6-minute soak the scorer's stored-id lookup kept one made while the
    posts table was small: a sequential scan, 0.2 s a batch at first and 0.77 s at
    ~100,000 rows (auto_explain, pg_stat_statements). Every pooled connection therefore
    plans each execution for its parameters, also after a rollback and on a second
    connection, and the lookup, run past the prepare threshold, never used a generic plan.
    """
    from finpulse.services.validation import split_conflicts
    from ingest.consumer import ConsumedPost

    storage = Storage(postgres_url)
    storage.migrate()
    try:
        with storage.engine.connect() as first, storage.engine.connect() as second:
            first.execute(sa.text("SELECT 1"))
            first.rollback()
            for conn in (first, second):
                assert conn.execute(sa.text("SHOW plan_cache_mode")).scalar() == "force_custom_plan"
        for batch in range(8):
            posts = [scored(f"p-{batch}-{i}", timedelta(seconds=i)) for i in range(20)]
            split_conflicts(storage, [ConsumedPost(post, "news", 0, i, 0)
                                      for i, post in enumerate(posts)])
            storage.save_scored(posts)
        with storage.begin() as conn:
            plans = conn.execute(sa.text(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE 'SELECT posts.id, posts.source%'")).all()
        assert plans, "the lookup was not prepared: the check would prove nothing"
        assert all(generic == 0 for generic, _ in plans)
        assert sum(custom for _, custom in plans) >= 3
    finally:
        storage.dispose()

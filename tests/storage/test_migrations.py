"""The Alembic migrations build exactly the tables ``finpulse/storage/tables.py`` declares."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from finpulse.storage import Storage, tables


def test_migrated_schema_matches_the_tables(storage: Storage) -> None:
    with storage.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, tables.metadata)
    assert diff == []


def test_every_table_and_time_index_exists(storage: Storage) -> None:
    inspector = sa.inspect(storage.engine)
    assert set(tables.metadata.tables) <= set(inspector.get_table_names())
    indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes("post_tickers")}
    assert ("ticker", "published_at") in indexed
    assert ("published_at",) in {tuple(ix["column_names"]) for ix in inspector.get_indexes("posts")}
    assert inspector.get_pk_constraint("scores")["constrained_columns"] == [
        "post_id",
        "model_version",
    ]
    assert inspector.get_pk_constraint("aggregates")["constrained_columns"] == [
        "ticker",
        "window_size",
        "window_start",
    ]

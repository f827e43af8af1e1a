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


def test_0007_marks_existing_scores_live_and_downgrades_to_live_only(storage: Storage) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from finpulse.storage.database import MIGRATIONS_DIR
    from finpulse.storage.versions import save_rescored, versions_of_scores
    from tests.records import T0, scored

    def migrate_to(revision: str) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with storage.begin() as conn:
            config.attributes["connection"] = conn
            if revision == "head":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)

    posts = [scored(f"p{i}", T0, ("ACME",), 0.1 * i) for i in range(3)]
    storage.save_scored(posts)
    save_rescored(storage, [p.model_copy(update={"model_version": "v2"}) for p in posts])
    migrate_to("0006")
    assert storage.revision() == "0006"
    assert "role" not in {c["name"] for c in sa.inspect(storage.engine).get_columns("scores")}
    assert storage.count_scores() == 3  # only live scores existed before 0007
    migrate_to("head")
    assert storage.revision() == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert versions_of_scores(storage) == {"v1": {"live": 3}}

"""The Alembic migrations build exactly the tables ``finpulse/storage/tables.py`` declares."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from finpulse.storage import Storage, tables


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from finpulse.storage.database import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def _migrate(storage: Storage, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from finpulse.storage.database import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with storage.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, direction)(config, revision)


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
    assert storage.revision() == _head()
    assert versions_of_scores(storage) == {"v1": {"live": 3}}


def test_0009_fills_alert_stories_from_the_evidence_of_risk_event_alerts(
    storage: Storage, tmp_path
) -> None:
    from datetime import timedelta

    from monitor.risk_events import evaluate_risk_events
    from monitor.rules import RuleSet
    from tests.monitor.receivers import insert_alert
    from tests.records import scored

    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: risk, kind: risk_event, phrases: [fraud, recall]}\n")
    rules = RuleSet.load(path)
    m = timedelta(minutes=1)
    first = scored("first", 5 * m, score=-0.8, text="Acme fraud probe")
    storage.save_scored([
        first,
        scored("copy", 6 * m, score=-0.8, text="RT: Acme fraud probe").model_copy(
            update={"cluster_id": "first"}),
        scored("second", 7 * m, score=-0.9, text="Acme recall"),
    ])
    evaluate_risk_events(storage, rules)
    window_alert = insert_alert(storage)
    st = tables.alert_stories
    with storage.begin() as conn:
        conn.execute(sa.insert(tables.alert_posts).values(
            alert_id=window_alert, post_id="second", rank=1, score=-0.9))
        recorded = sorted(conn.execute(sa.select(st.c.alert_id, st.c.story, st.c.post_id)).all())
    assert recorded == [("risk:ACME:1m:2024-03-04T00:05Z", "first", "first"),
                        ("risk:ACME:1m:2024-03-04T00:05Z", "second", "second")]

    _migrate(storage, "downgrade", "0008")
    assert not sa.inspect(storage.engine).has_table("alert_stories")
    _migrate(storage, "upgrade", "head")
    with storage.begin() as conn:  # rebuilt from the risk-event alert's evidence only
        assert sorted(conn.execute(sa.select(st.c.alert_id, st.c.story, st.c.post_id)).all()) \
            == recorded
    assert evaluate_risk_events(storage, rules) == []
    assert {a.id: a.value for a in storage.alerts()}[recorded[0][0]] == 2.0

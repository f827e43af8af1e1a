"""The database: idempotent writes of scored posts, and the queries risk teams and rules need.

One ``Storage`` wraps one SQLAlchemy engine. SQLite (the embedded default) runs in WAL
mode with foreign keys on and a busy timeout, so several processes can share a file;
PostgreSQL is reached through psycopg 3. Every write is keyed (``INSERT ... ON CONFLICT DO
NOTHING``), so a batch that Kafka redelivers after a crash is stored once.

SQLAlchemy errors leave this module as ``StorageError`` with a one-line message (the
driver's first line, never the SQL statement).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from finpulse.errors import ConfigError, StorageError
from finpulse.schemas import Alert, ScoredPost, WindowAggregate
from finpulse.storage import tables as t

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Ids per ``IN (...)`` lookup: well under SQLite's 32,766 bound parameters.
_CHUNK = 500
# Any constant works; it only has to be the same in every finpulse process.
_MIGRATION_LOCK_KEY = 0x66696E70


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def normalize_url(url: str) -> str:
    """Map ``postgresql://``/``postgres://`` to the psycopg 3 driver; leave other URLs alone."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _describe(exc: BaseException) -> str:
    """The first line of the driver's message, without SQLAlchemy's SQL dump."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"{type(orig).__name__}: {first}"


def _is_transient(exc: BaseException) -> bool:
    """Whether a SQLAlchemy error means "unreachable, try again" rather than "refused".

    Lost or refused connections, timeouts and SQLite's "database is locked" are transient;
    a statement or data the database (or the driver, before sending) refuses is not.
    """
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError,
                            sa.exc.DisconnectionError, sa.exc.TimeoutError))


class Storage:
    """finpulse's database (SQLite or PostgreSQL) behind one engine.

    Args:
        url: a SQLAlchemy URL: ``sqlite:///path.db``, ``postgresql+psycopg://...`` or
            plain ``postgresql://...`` (mapped to psycopg 3).

    Raises:
        ConfigError: the URL cannot be parsed or names a driver that is not installed.
    """

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        try:
            parsed = sa.make_url(self.url)
            if parsed.get_backend_name() == "sqlite":
                self._engine = self._sqlite_engine(parsed)
            else:
                self._engine = self._postgres_engine(parsed)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise ConfigError(f"database_url: {exc}", field="database_url") from exc
        self.dialect: str = self._engine.dialect.name

    @staticmethod
    def _sqlite_engine(url: sa.URL) -> Engine:
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            # WAL: readers never block the writer; other processes can read while we write.
            _enable_wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine

    @staticmethod
    def _postgres_engine(url: sa.URL) -> Engine:
        engine = sa.create_engine(url, pool_pre_ping=True)

        @sa.event.listens_for(engine, "connect")
        def _custom_plans(dbapi_connection: Any, _record: Any) -> None:
            # psycopg prepares a statement on the server after its fifth run, and PostgreSQL
            # may then keep one generic plan for it: made while the posts table was small,
            # the scorer's stored-id lookup stayed a sequential scan as the table grew (0.2 s
            # -> 0.77 s a batch over a 6-minute soak, until ANALYZE, which autovacuum may
            # never run). Plan every execution for its parameters and the table as it is.
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True
            cursor = dbapi_connection.cursor()
            cursor.execute("SET plan_cache_mode = force_custom_plan")
            cursor.close()
            dbapi_connection.autocommit = autocommit

        return engine

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back on any error.

        Raises:
            StorageError: the database refused or could not be reached.
        """
        try:
            with self._engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(_describe(exc), transient=_is_transient(exc)) from exc

    def insert(self, table: sa.Table) -> Any:
        """A dialect-specific INSERT that supports ``on_conflict_do_nothing``/``_do_update``."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def migrate(self) -> None:
        """Bring the schema up to date (``alembic upgrade head``); safe to run any number of times.

        A database whose tables were created without Alembic is stamped rather than
        re-created. Concurrent migrations queue (PostgreSQL: an advisory lock; SQLite: an
        immediate write transaction).

        Raises:
            StorageError: the database refused a migration step.
        """
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.begin() as conn:
            if self.dialect == "sqlite":
                # pysqlite opens no transaction before DDL; take the write lock up front so
                # concurrent migrations queue behind each other (busy timeout) instead of racing.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif self.dialect == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            config.attributes["connection"] = conn
            existing = set(sa.inspect(conn).get_table_names())
            if "alembic_version" not in existing and set(t.metadata.tables) <= existing:
                logger.warning("tables exist without an Alembic version; stamping them as current")
                command.stamp(config, "head")
            command.upgrade(config, "head")

    def revision(self) -> str | None:
        """The schema's Alembic revision, or None for a database finpulse never migrated.

        Raises:
            StorageError: the database cannot be reached.
        """
        with self.begin() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(
                sa.text("SELECT version_num FROM alembic_version")
            ).scalar_one_or_none()

    def save_scored(
        self,
        posts: Sequence[ScoredPost],
        *,
        progress: Mapping[tuple[str, int], datetime] | None = None,
        shadow: Sequence[ScoredPost] = (),
        on_shadow_error: Callable[[Exception], None] | None = None,
        checked: Collection[str] = (),
    ) -> int:
        """Store scored posts in one transaction; a post or score already stored is skipped.

        First write wins: a post whose id is already stored (or came earlier in ``posts``)
        with other content is skipped entirely (no tickers, no score), so a stored post
        always matches its text, tickers and scores. The scorer refuses such posts to the
        DLQ before they get here (``finpulse.services.validation``).

        In the same transaction it marks the (ticker, minute) buckets that received new
        scores as dirty (the monitor re-aggregates them) and records each input partition's
        event-time progress (the monitor's watermark).

        Args:
            posts: scored posts; the same post may come with several model versions.
            progress: the newest ``published_at`` per (topic, partition) in this batch;
                stored capped at the current time, so a post dated in the future cannot
                move the watermark past the present.
            shadow: the shadow model's scores of (some of) these posts, stored in the same
                transaction as ``role = 'shadow'`` and never marked dirty (see
                ``finpulse.storage.versions.save_shadow``); the database refusing them
                loses only them (a savepoint), never the live scores.
            on_shadow_error: called with the error when the shadow scores were refused.
            checked: ids the caller has just read from the database and found stored with
                the same content (``finpulse.services.validation.split_conflicts``): not
                read again. Any other id found already stored is compared here.

        Returns:
            The number of new score rows (0 when the whole batch was already stored).

        Raises:
            StorageError: the database refused the batch (nothing of it is stored).
        """
        if not posts:
            return 0
        now = utcnow()
        post_rows: dict[str, dict[str, Any]] = {}
        ticker_rows: dict[tuple[str, str], dict[str, Any]] = {}
        score_rows: dict[tuple[str, str], dict[str, Any]] = {}
        for post in posts:
            if post.id in post_rows and not _same_post(post_rows[post.id], post):
                continue
            post_rows.setdefault(
                post.id,
                {
                    "id": post.id,
                    "source": post.source,
                    "text": post.text,
                    "title": post.title,
                    "url": post.url,
                    "author": post.author,
                    "published_at": post.published_at,
                    "tickers": list(post.tickers),
                    "lang": post.lang,
                    "stored_at": now,
                    "cluster_id": post.cluster_id,
                },
            )
            for ticker in post.tickers:
                ticker_rows.setdefault(
                    (post.id, ticker),
                    {"post_id": post.id, "ticker": ticker, "published_at": post.published_at},
                )
            score_rows.setdefault(
                (post.id, post.model_version),
                {
                    "post_id": post.id,
                    "model_version": post.model_version,
                    "label": post.label,
                    "score": post.score,
                    "p_negative": post.probabilities.get("negative", 0.0),
                    "p_neutral": post.probabilities.get("neutral", 0.0),
                    "p_positive": post.probabilities.get("positive", 0.0),
                    "confidence": post.confidence,
                    "scored_at": post.scored_at,
                    "stored_at": now,
                },
            )
        new_scores = 0
        with self.begin() as conn:
            new_ids = set(self.insert_new(conn, t.posts, list(post_rows.values()), t.posts.c.id))
            # Already stored with other content (first write wins): no tickers, no scores.
            unchecked = [post_rows[i] for i in post_rows if i not in new_ids and i not in checked]
            others = _stored_differently(conn, unchecked)
            if others:
                ticker_rows = {k: v for k, v in ticker_rows.items() if k[0] not in others}
                score_rows = {k: v for k, v in score_rows.items() if k[0] not in others}
            if ticker_rows:
                self.insert_new(conn, t.post_tickers, list(ticker_rows.values()))
            if score_rows:
                new_post_ids = self.insert_new(conn, t.scores, list(score_rows.values()),
                                               t.scores.c.post_id)
                new_scores = len(new_post_ids)
                _mark_dirty(self, conn, new_post_ids, post_rows, now)
            if progress:
                _record_progress(self, conn, progress, now)
            if shadow:
                from finpulse.storage.versions import save_shadow

                save_shadow(self, conn, shadow, skip=others, on_error=on_shadow_error)
        logger.debug("stored %d scored posts: %d new scores", len(posts), new_scores)
        return new_scores

    def insert_new(self, conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]],
                   returning: sa.Column[Any] | None = None) -> list[Any]:
        """``INSERT ... ON CONFLICT DO NOTHING`` of many rows with the same keys.

        On PostgreSQL the rows travel as one array per column through ``unnest``: one short
        statement whatever the batch size. A multi-row ``VALUES`` statement (SQLAlchemy's
        executemany, "insertmanyvalues") has a placeholder per value, and psycopg parses any
        statement over 4,096 characters or 50 parameters again at every execution: that
        parse was ~19% of a scorer's host time (``bench/e2e.py --host-ceiling``, py-spy).
        SQLite keeps the executemany.

        Args:
            conn: the transaction's connection.
            table: the table.
            rows: the rows, as column name -> value; every row has the same keys.
            returning: a column to return for the rows actually inserted.

        Returns:
            ``returning``'s values of the inserted rows (empty without ``returning``).
        """
        if not rows:
            return []
        if self.dialect != "postgresql":
            stmt = self.insert(table).on_conflict_do_nothing()
            if returning is None:
                conn.execute(stmt, list(rows))
                return []
            return list(conn.execute(stmt.returning(returning), list(rows)).scalars())
        columns = tuple(rows[0])
        sql = _unnest_insert(table, columns, returning.name if returning is not None else None)
        params = {f"c{i}": _array(table.c[name], (row[name] for row in rows), conn.dialect)
                  for i, name in enumerate(columns)}
        result = conn.exec_driver_sql(sql, params)
        return list(result.scalars()) if returning is not None else []

    def count_posts(self) -> int:
        """The number of stored posts."""
        return self._count(t.posts)

    def count_scores(self) -> int:
        """The number of stored scores (one per post and model version)."""
        return self._count(t.scores)

    def _count(self, table: sa.Table) -> int:
        with self.begin() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    def scores(
        self,
        ticker: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[ScoredPost]:
        """Live-scored posts, newest published first; one record per (post, model version).

        Shadow and rescored scores (``scores.role``) are not listed here; see
        ``finpulse.storage.history.search_posts(model=...)``.

        Args:
            ticker: only posts about this ticker.
            since: only posts published at or after this time.
            until: only posts published before this time.
            limit: at most this many records.

        Raises:
            StorageError: the query failed.
        """
        p, s = t.posts, t.scores
        query = sa.select(p, s).join(s, sa.and_(s.c.post_id == p.c.id, s.c.role == t.LIVE))
        if ticker is not None:
            pt = t.post_tickers
            query = query.join(pt, pt.c.post_id == p.c.id).where(pt.c.ticker == ticker.upper())
        if since is not None:
            query = query.where(p.c.published_at >= since)
        if until is not None:
            query = query.where(p.c.published_at < until)
        query = query.order_by(
            p.c.published_at.desc(), p.c.id, s.c.scored_at.desc(), s.c.model_version
        ).limit(limit)
        with self.begin() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            ScoredPost(
                id=row["id"],
                source=row["source"],
                text=row["text"],
                title=row["title"],
                url=row["url"],
                author=row["author"],
                published_at=row["published_at"],
                tickers=tuple(row["tickers"]),
                lang=row["lang"],
                label=row["label"],
                score=row["score"],
                probabilities={
                    "negative": row["p_negative"],
                    "neutral": row["p_neutral"],
                    "positive": row["p_positive"],
                },
                confidence=row["confidence"],
                model_version=row["model_version"],
                scored_at=row["scored_at"],
                cluster_id=row["cluster_id"],
            )
            for row in rows
        ]

    def aggregates(
        self,
        ticker: str | None,
        window: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[WindowAggregate]:
        """Window aggregates of one window size, by ticker then window start.

        Args:
            ticker: one ticker, or None for all.
            window: ``1m``, ``5m``, ``1h`` or ``1d``.
            since: windows starting at or after this time.
            until: windows starting before this time.

        Raises:
            StorageError: the query failed.
        """
        a = t.aggregates
        query = sa.select(a).where(a.c.window_size == window)
        if ticker is not None:
            query = query.where(a.c.ticker == ticker.upper())
        if since is not None:
            query = query.where(a.c.window_start >= since)
        if until is not None:
            query = query.where(a.c.window_start < until)
        query = query.order_by(a.c.ticker, a.c.window_start)
        with self.begin() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            WindowAggregate(
                ticker=row["ticker"],
                window=row["window_size"],
                start=row["window_start"],
                n=row["n"],
                mean_score=row["mean_score"],
                negative_share=row["negative_share"],
                volume=row["volume"],
                weighted_score=row["weighted_score"],
            )
            for row in rows
        ]

    def alerts(self, state: str | None = None, ticker: str | None = None) -> list[Alert]:
        """Stored alerts, most recently fired first, with the posts that drove each.

        Args:
            state: ``firing`` or ``resolved``; None for both.
            ticker: one ticker, or None for all.

        Raises:
            StorageError: the query failed.
        """
        query = sa.select(t.alerts)
        if state is not None:
            query = query.where(t.alerts.c.state == state)
        if ticker is not None:
            query = query.where(t.alerts.c.ticker == ticker.upper())
        query = query.order_by(t.alerts.c.fired_at.desc(), t.alerts.c.id)
        with self.begin() as conn:
            rows = conn.execute(query).mappings().all()
            return self.alert_records(conn, rows)

    @staticmethod
    def alert_records(conn: Connection, rows: Sequence[Any]) -> list[Alert]:
        """Turn ``alerts`` rows into ``Alert`` records, reading their posts from ``alert_posts``."""
        ids = [row["id"] for row in rows]
        post_ids: dict[str, list[str]] = {alert_id: [] for alert_id in ids}
        for chunk_start in range(0, len(ids), _CHUNK):
            chunk = ids[chunk_start : chunk_start + _CHUNK]
            links = conn.execute(
                sa.select(t.alert_posts.c.alert_id, t.alert_posts.c.post_id)
                .where(t.alert_posts.c.alert_id.in_(chunk))
                .order_by(t.alert_posts.c.alert_id, t.alert_posts.c.rank)
            )
            for alert_id, post_id in links:
                post_ids[alert_id].append(post_id)
        return [
            Alert(
                id=row["id"],
                rule=row["rule"],
                ticker=row["ticker"],
                window=row["window_size"],
                severity=row["severity"],
                value=row["value"],
                threshold=row["threshold"],
                baseline=row["baseline"],
                state=row["state"],
                fired_at=row["fired_at"],
                resolved_at=row["resolved_at"],
                explanation=row["explanation"],
                post_ids=tuple(post_ids[row["id"]]),
            )
            for row in rows
        ]

    def feedback_examples(self, since: datetime | None = None) -> list[Any]:
        """Analysts' labels for retraining, oldest first (``feedback.FeedbackExample`` rows).

        Args:
            since: only feedback given at or after this time.

        Raises:
            StorageError: the query failed.
        """
        from finpulse.storage.feedback import feedback_examples

        return list(feedback_examples(self, since))

    def retrain_runs(self, limit: int = 50) -> list[Any]:
        """Recorded retraining runs, newest first (``finpulse.storage.retraining.RetrainRun``).

        Raises:
            StorageError: the query failed.
        """
        from finpulse.storage.retraining import list_runs

        return list_runs(self, limit)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"Storage({self._engine.url.render_as_string(hide_password=True)!r})"


_CONTENT = ("source", "text", "title", "url", "author", "published_at", "tickers", "lang")


def _same_post(row: dict[str, Any], post: ScoredPost) -> bool:
    """Whether a ``posts`` row (as built or as read back) holds the same post as ``post``."""
    return all(
        (tuple(row[name] or ()) == post.tickers) if name == "tickers"
        else (row[name] == getattr(post, name))
        for name in _CONTENT
    )


def _stored_differently(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Ids among ``rows`` whose stored post differs from the row (a re-published id)."""
    wanted = {row["id"]: row for row in rows}
    found: set[str] = set()
    ids = list(wanted)
    for start in range(0, len(ids), _CHUNK):
        query = sa.select(t.posts).where(t.posts.c.id.in_(ids[start : start + _CHUNK]))
        for stored in conn.execute(query).mappings():
            mine = wanted[stored["id"]]
            if any(
                tuple(stored[n] or ()) != tuple(mine[n] or ()) if n == "tickers"
                else stored[n] != mine[n]
                for n in _CONTENT
            ):
                found.add(stored["id"])
    return found


@functools.lru_cache(maxsize=64)
def _unnest_insert(table: sa.Table, columns: tuple[str, ...], returning: str | None) -> str:
    """``INSERT INTO table (columns) SELECT * FROM unnest(%(c0)b, ...) ON CONFLICT DO NOTHING``
    for psycopg on PostgreSQL, each parameter an array cast to its column's type.

    The arrays go in binary (``%b``): psycopg's text format quotes every element in Python,
    ~10x the time of the binary one for 256-row arrays of text, times and floats.
    """
    dialect = postgresql.dialect()
    quote = dialect.identifier_preparer.quote
    casts = ", ".join(f"CAST(%(c{i})b AS {_array_type(table.c[name])}[])"
                      for i, name in enumerate(columns))
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
           f"SELECT * FROM unnest({casts}) ON CONFLICT DO NOTHING")
    if returning is not None:
        sql += f" RETURNING {quote(returning)}"
    return sql


def _array_type(column: sa.Column[Any]) -> str:
    """The element type of a column's ``unnest`` array. Strings go as ``text``: a cast to
    ``varchar(n)`` would cut a long value, where the insert itself refuses it."""
    if isinstance(column.type, sa.String):
        return "TEXT"
    if isinstance(column.type, sa.JSON):
        return "JSON"
    return str(column.type.compile(dialect=postgresql.dialect()))


def _array(column: sa.Column[Any], values: Iterable[Any], dialect: sa.Dialect) -> list[Any]:
    """One column's values as the driver takes them (each through the column type's own bind
    processing, so e.g. a naive datetime is refused as it would be row by row)."""
    if isinstance(column.type, sa.JSON):
        return [json.dumps(value) for value in values]
    process = column.type.bind_processor(dialect)
    return [process(value) for value in values] if process is not None else list(values)


def _mark_dirty(
    storage: Storage,
    conn: Connection,
    post_ids: Sequence[str],
    post_rows: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> None:
    """Mark the (ticker, minute) buckets of newly scored posts for re-aggregation."""
    counts: dict[tuple[str, datetime], int] = {}
    for post_id in post_ids:
        row = post_rows[post_id]
        epoch = int(row["published_at"].timestamp() // 60 * 60)
        minute = datetime.fromtimestamp(epoch, tz=timezone.utc)
        for ticker in row["tickers"]:
            counts[(ticker, minute)] = counts.get((ticker, minute), 0) + 1
    rows = [
        {"ticker": ticker, "minute_start": minute, "n": n, "marked_at": now}
        for (ticker, minute), n in sorted(counts.items())
    ]
    if not rows:
        return
    table = t.dirty_windows
    stmt = storage.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.ticker, table.c.minute_start],
        set_={"n": table.c.n + stmt.excluded.n, "marked_at": stmt.excluded.marked_at},
    )
    conn.execute(stmt, rows)


def _record_progress(
    storage: Storage,
    conn: Connection,
    progress: Mapping[tuple[str, int], datetime],
    now: datetime,
) -> None:
    """Raise each partition's stored event-time progress (never lower it)."""
    table = t.partition_progress
    rows = [
        {"topic": topic, "partition": partition,
         "max_published_at": min(published_at, now), "updated_at": now}
        for (topic, partition), published_at in sorted(progress.items())
    ]
    stmt = storage.insert(table)
    newer = stmt.excluded.max_published_at > table.c.max_published_at
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.topic, table.c.partition],
        set_={
            "max_published_at": sa.case(
                (newer, stmt.excluded.max_published_at), else_=table.c.max_published_at
            ),
            "updated_at": stmt.excluded.updated_at,
        },
    )
    conn.execute(stmt, rows)


def _enable_wal(cursor: Any, attempts: int = 100) -> None:
    """Switch a SQLite file to WAL, waiting out other connections doing the same.

    Changing the journal mode needs an exclusive lock and SQLite reports "database is
    locked" at once, without honouring the busy timeout, while another connection holds
    one (e.g. a concurrent first connection or migration); once in WAL mode it is a no-op.
    """
    import sqlite3
    import time

    for attempt in range(attempts):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)

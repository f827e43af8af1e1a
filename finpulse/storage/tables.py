"""The database tables (SQLAlchemy Core), the single source the Alembic migrations follow.

Every write finpulse makes is keyed so it can be repeated: a post's id is unique, a
score is unique per (post, model version), an aggregate per (ticker, window size,
window start), an alert id is derived from its rule, ticker and first window. Times are
stored in UTC (``UTCDateTime``) and always come back timezone-aware.

Column names avoid SQL keywords (``window_size``, ``window_start``) so hand-written
queries (Grafana panels, psql) need no quoting.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# What a score is for (``scores.role``). Only ``live`` scores are what the pipeline knew when it
# scored the stream: every live reader (aggregates, dirty markers, alerts, risk events, model
# health, evidence, the history's default view) reads them alone. ``shadow``: a challenger
# scoring the stream beside the champion; ``rescore``: ``finpulse rescore`` re-scoring history.
LIVE = "live"
SCORE_ROLES = (LIVE, "shadow", "rescore")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC.

    SQLite has no timezone type: values are stored as naive UTC text (which sorts and
    compares correctly) and re-attached to UTC on the way out. PostgreSQL uses
    ``timestamptz``. Naive datetimes are refused rather than guessed.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: finpulse stores timezone-aware times only")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


posts = sa.Table(
    "posts",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("source", sa.String(40), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("title", sa.Text),
    sa.Column("url", sa.String(2000)),
    sa.Column("author", sa.String(200)),
    sa.Column("published_at", UTCDateTime, nullable=False, index=True),
    # The tickers as published (ordered); post_tickers indexes them for queries.
    sa.Column("tickers", sa.JSON, nullable=False),
    sa.Column("lang", sa.String(16)),
    sa.Column("stored_at", UTCDateTime, nullable=False),
    # The near-duplicate cluster (story) a post belongs to; NULL: a story of its own.
    sa.Column("cluster_id", sa.String(200), index=True),
)

# One row per (post, ticker): a post about several companies counts for each.
# published_at is copied here so per-ticker time-range scans need no join.
post_tickers = sa.Table(
    "post_tickers",
    metadata,
    sa.Column(
        "post_id",
        sa.String(200),
        sa.ForeignKey("posts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("ticker", sa.String(10), primary_key=True),
    sa.Column("published_at", UTCDateTime, nullable=False),
    sa.Index("ix_post_tickers_ticker_published_at", "ticker", "published_at"),
)

scores = sa.Table(
    "scores",
    metadata,
    sa.Column(
        "post_id",
        sa.String(200),
        sa.ForeignKey("posts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("model_version", sa.String(200), primary_key=True),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("p_negative", sa.Float, nullable=False),
    sa.Column("p_neutral", sa.Float, nullable=False),
    sa.Column("p_positive", sa.Float, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("scored_at", UTCDateTime, nullable=False),
    # When this row reached the database (new work is found through dirty_windows).
    sa.Column("stored_at", UTCDateTime, nullable=False, index=True),
    sa.CheckConstraint("label IN ('negative', 'neutral', 'positive')", name="label"),
)

aggregates = sa.Table(
    "aggregates",
    metadata,
    sa.Column("ticker", sa.String(10), primary_key=True),
    sa.Column("window_size", sa.String(4), primary_key=True),
    sa.Column("window_start", UTCDateTime, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("n_negative", sa.Integer, nullable=False),
    sa.Column("mean_score", sa.Float, nullable=False),
    # Population standard deviation of the scores in the window (0 for one post).
    sa.Column("score_std", sa.Float, nullable=False),
    sa.Column("weighted_score", sa.Float, nullable=False),
    sa.Column("negative_share", sa.Float, nullable=False),
    # Posts per minute, comparable across window sizes.
    sa.Column("volume", sa.Float, nullable=False),
    sa.Column("last_published_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Distinct stories: COUNT(DISTINCT COALESCE(posts.cluster_id, posts.id)).
    sa.Column("n_unique", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Index("ix_aggregates_window_size_window_start", "window_size", "window_start"),
)

alerts = sa.Table(
    "alerts",
    metadata,
    # "<rule>:<ticker>:<window>:<first window start>", so re-running never duplicates.
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("ticker", sa.String(10), nullable=False),
    sa.Column("window_size", sa.String(4), nullable=False),
    sa.Column("window_start", UTCDateTime, nullable=False),
    sa.Column("last_window_start", UTCDateTime, nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("baseline", sa.Float),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("fired_at", UTCDateTime, nullable=False),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("explanation", sa.Text, nullable=False),
    sa.CheckConstraint("state IN ('firing', 'resolved')", name="state"),
    sa.Index("ix_alerts_state_fired_at", "state", "fired_at"),
    sa.Index("ix_alerts_ticker_fired_at", "ticker", "fired_at"),
    sa.Index("ix_alerts_rule_ticker", "rule", "ticker"),
)

# The posts that drove an alert, most negative first (rank 1).
alert_posts = sa.Table(
    "alert_posts",
    metadata,
    sa.Column(
        "alert_id",
        sa.String(200),
        sa.ForeignKey("alerts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "post_id",
        sa.String(200),
        sa.ForeignKey("posts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
)

# Every story (near-duplicate cluster) a risk-event alert has counted; ``alert_posts`` keeps
# only the few shown as evidence. A pass adds one to the alert's value only for a story it
# inserts here, so re-reading a post never counts its story twice.
alert_stories = sa.Table(
    "alert_stories",
    metadata,
    sa.Column(
        "alert_id",
        sa.String(200),
        sa.ForeignKey("alerts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("story", sa.String(200), primary_key=True),
    # The post that brought the story in.
    sa.Column("post_id", sa.String(200), nullable=False),
)

# How far each rule has evaluated closed windows (event time), and for which config.
rule_cursors = sa.Table(
    "rule_cursors",
    metadata,
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("window_size", sa.String(4), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("closed_until", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Each rule's progress per ticker: ``state`` holds the detector's baseline and the alert
# machine (firing alert, last resolution) after judging every window before ``next_start``.
rule_baselines = sa.Table(
    "rule_baselines",
    metadata,
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("ticker", sa.String(10), primary_key=True),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The start of the first window of this ticker not judged yet (NULL: none judged).
    sa.Column("next_start", UTCDateTime),
)

# The state of a (rule, ticker) just *before* each judged window, kept for the allowed
# lateness: a late post re-opens its window and the rule replays from the snapshot.
rule_snapshots = sa.Table(
    "rule_snapshots",
    metadata,
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("ticker", sa.String(10), primary_key=True),
    sa.Column("window_start", UTCDateTime, primary_key=True),
    sa.Column("state", sa.JSON, nullable=False),
)

# Event-time progress per input partition, written by the scorers in the same transaction
# as a batch's rows: the monitor's watermark is the minimum over the active partitions.
partition_progress = sa.Table(
    "partition_progress",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    # The newest published_at stored from this partition (capped at the time it was stored).
    sa.Column("max_published_at", UTCDateTime, nullable=False),
    # Wall clock of the last batch with data from this partition (idle detection).
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# (ticker, minute) buckets that received new scores and await re-aggregation; written with
# the scores, claimed (deleted) by the monitor in the transaction that re-aggregates them.
dirty_windows = sa.Table(
    "dirty_windows",
    metadata,
    sa.Column("ticker", sa.String(10), primary_key=True),
    sa.Column("minute_start", UTCDateTime, primary_key=True),
    # New scores in this bucket since it was last claimed.
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("marked_at", UTCDateTime, nullable=False),
    sa.Index("ix_dirty_windows_minute_start", "minute_start"),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("version", sa.String(200), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("base", sa.String(500), nullable=False),
    sa.Column("method", sa.String(40), nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("artifact_path", sa.String(1000), nullable=False),
    sa.Column("trainable_params", sa.BigInteger),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("promoted_at", UTCDateTime),
    sa.Column("retired_at", UTCDateTime),
    # "superseded" (a newer champion was promoted) or "rolled_back" (rollback() removed it).
    sa.Column("retired_reason", sa.String(32)),
    sa.CheckConstraint("status IN ('champion', 'challenger', 'retired')", name="status"),
)

# ---- delivery to subscribers, the API's keys, analysts' feedback (migration 0004) ------------

# Acknowledgement of an alert (who, when, comment): an acknowledged alert sends no
# "updated" notifications until it resolves.
alerts.append_column(sa.Column("acked_by", sa.String(200)))
alerts.append_column(sa.Column("acked_at", UTCDateTime))
alerts.append_column(sa.Column("ack_comment", sa.Text))

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    # URL (webhook, slack), e-mail address (email) or topic (kafka).
    sa.Column("target", sa.String(2000), nullable=False),
    # Filters: an empty list matches everything.
    sa.Column("tickers", sa.JSON, nullable=False),
    sa.Column("rules", sa.JSON, nullable=False),
    sa.Column("sources", sa.JSON, nullable=False),
    sa.Column("min_severity", sa.String(16), nullable=False),
    # HMAC-SHA256 key of the X-Finpulse-Signature header (webhook channels).
    sa.Column("secret", sa.String(200)),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Removed subscriptions are kept (their deliveries stay readable) but never match again.
    sa.Column("deleted_at", UTCDateTime),
    sa.CheckConstraint("channel IN ('webhook', 'email', 'slack', 'kafka')", name="channel"),
    sa.CheckConstraint("min_severity IN ('info', 'warning', 'critical')", name="min_severity"),
)

# Alert events, written in the same transaction as the alert change they describe; the
# notifier fans each one out into deliveries (one per matching subscription).
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.String(200), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    # The alert as it was when the event happened (JSON), so every receiver sees the same.
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("dispatched_at", UTCDateTime),
    sa.CheckConstraint("kind IN ('fired', 'updated', 'resolved')", name="kind"),
    sa.Index("ix_outbox_dispatched_at_id", "dispatched_at", "id"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    # Stable across retries and restarts: receivers deduplicate on it.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.Integer, sa.ForeignKey("outbox.id"), nullable=False),
    sa.Column("subscription_id", sa.String(32), sa.ForeignKey("subscriptions.id"), nullable=False),
    sa.Column("alert_id", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    # When the next attempt is due; while an attempt runs, when its claim lapses.
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.Text),
    # When the alert event was stored (the latency metric runs from here).
    sa.Column("event_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status"),
    sa.UniqueConstraint("event_id", "subscription_id"),
    sa.Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    # The key's public part; the secret part is stored only as a SHA-256 hash.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),
    sa.CheckConstraint("role IN ('reader', 'analyst', 'admin')", name="role"),
)

# Analysts' corrected labels; the retraining job reads them (Storage.feedback_examples).
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "post_id",
        sa.String(200),
        sa.ForeignKey("posts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False, index=True),
    sa.CheckConstraint("label IN ('negative', 'neutral', 'positive')", name="label"),
)

# One row per retraining run: inserted when it starts (decision NULL while running, or
# forever if the process died), completed with both models' metrics and the gate's verdict.
retrain_runs = sa.Table(
    "retrain_runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("started_at", UTCDateTime, nullable=False, index=True),
    sa.Column("finished_at", UTCDateTime),
    # "manual" (finpulse retrain), "schedule" (finpulse retrain --every) or
    # "model_health:<alert id>" (a run started early by a model-health alert).
    sa.Column("trigger", sa.String(250), nullable=False),
    sa.Column("champion", sa.String(200), nullable=False),
    sa.Column("challenger", sa.String(200)),
    sa.Column("decision", sa.String(16)),
    sa.Column("reason", sa.Text),
    # Examples per source (base, replay, feedback, feedback_held_back, gold, ...).
    sa.Column("counts", sa.JSON, nullable=False),
    # {"champion": metrics, "challenger": metrics} on the gold set and on held-back feedback.
    sa.Column("gold", sa.JSON, nullable=False),
    sa.Column("feedback", sa.JSON, nullable=False),
    sa.Column("seconds", sa.Float),
    sa.CheckConstraint("decision IN ('promoted', 'rejected', 'failed')", name="decision"),
)

# ---- shadow scoring and rescoring (migration 0007) --------------------------------------------

# A score's role (``SCORE_ROLES``); rows written before 0007 and by ``save_scored`` are live.
scores.append_column(
    sa.Column("role", sa.String(8), nullable=False, server_default=sa.text(f"'{LIVE}'"))
)
scores.append_constraint(
    sa.CheckConstraint("role IN ('live', 'shadow', 'rescore')", name="role")
)
# The version the scorers run in shadow beside the champion (at most one is flagged).
model_versions.append_column(
    sa.Column("shadow", sa.Boolean, nullable=False, server_default=sa.false())
)

# Named leases: a process holds one until ``expires_at`` and renews it while it works, so
# two processes never do the same exclusive job at once ("retrain": a retraining run) and
# one that died frees it when the lease lapses.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

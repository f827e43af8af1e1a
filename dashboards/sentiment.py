""""Market sentiment": the analysts' dashboard, read from the PostgreSQL database.

Every query uses real column names from ``finpulse/storage/tables.py`` and Grafana's
PostgreSQL macros (``$__timeFilter``); ``$ticker`` is a multi-select filled from the
database, ``$window`` picks the aggregate window size. tests/dashboards/test_panels_data.py
runs every query against a database the real services filled.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLink,
    DynamicConfigValue,
    FieldColorModeId,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from dashboards.common import POSTGRES, Layout, Sql, SqlAnnotationTargetBuilder

UID = "finpulse-market-sentiment"
TICKERS = "ticker IN (${ticker:sqlstring})"
WINDOW = "window_size = '${window}'"


def _series(title: str, column: str, unit: str, description: str) -> timeseries.Panel:
    sql = f"""
        SELECT window_start AS "time", ticker AS metric, {column} AS value
        FROM aggregates
        WHERE $__timeFilter(window_start) AND {WINDOW} AND {TICKERS}
        ORDER BY 1, 2
    """
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(POSTGRES)
        .with_target(Sql(sql))
        .unit(unit)
        .line_width(2)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(True)
    )


def build() -> db.Dashboard:
    """The "Market sentiment" dashboard."""
    grid = Layout()
    ticker = (
        db.QueryVariable("ticker")
        .label("Ticker")
        .description("Companies to show (from the stored aggregates)")
        .datasource(POSTGRES)
        .query("SELECT DISTINCT ticker FROM aggregates ORDER BY 1")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(VariableOption(selected=True, text=["All"], value=["$__all"]))
    )
    window = (
        db.CustomVariable("window")
        .label("Window")
        .description("Aggregate window size (the monitor writes 1m, 5m and 1h)")
        .values("1m,5m,1h")
        .current(VariableOption(selected=True, text="1h", value="1h"))
    )
    sentiment = _series(
        "Sentiment by ticker", "mean_score", "none",
        "Mean sentiment score (P(positive) - P(negative), -1..1) per window. Red markers: alerts.",
    ).min(-1).max(1)
    index_sql = f"""
        SELECT window_start AS "time",
               SUM(mean_score * n)::float / NULLIF(SUM(n), 0) AS "market index"
        FROM aggregates
        WHERE $__timeFilter(window_start) AND {WINDOW}
        GROUP BY 1 ORDER BY 1
    """
    market = (
        timeseries.Panel()
        .title("Market sentiment index (volume-weighted, all tickers)")
        .description("Mean score over every ticker, each window weighted by its number of posts.")
        .datasource(POSTGRES)
        .with_target(Sql(index_sql))
        .unit("none").min(-1).max(1)
        .line_width(2)
        .fill_opacity(15)
        .show_points(cm.VisibilityMode.NEVER)
    )
    volume = _series("Volume (posts per minute)", "volume", "none",
                     "Posts per minute in each window, comparable across window sizes.")
    negative = _series("Negative share", "negative_share", "percentunit",
                       "Share of posts labelled negative in each window.").min(0).max(1)
    firing_count = (
        stat.Panel()
        .title("Alerts firing")
        .datasource(POSTGRES)
        .with_target(Sql(f"SELECT COUNT(*) AS firing FROM alerts WHERE state = 'firing' AND {TICKERS}", "table"))
        .color_scheme(db.FieldColor().mode(FieldColorModeId.THRESHOLDS))
        .thresholds(db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([
            Threshold(color="green", value=None), Threshold(color="red", value=1),
        ]))
    )
    model = (
        stat.Panel()
        .title("Model in use")
        .description("The champion model version in the registry.")
        .datasource(POSTGRES)
        .with_target(Sql(
            "SELECT version, method, promoted_at FROM model_versions WHERE status = 'champion'", "table"))
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("/^version$/"))
    )
    firing_sql = f"""
        SELECT fired_at AS "fired (event time)", ticker, rule, window_size AS "window", severity,
               value, threshold, explanation
        FROM alerts
        WHERE state = 'firing' AND {TICKERS}
        ORDER BY fired_at DESC
    """
    firing = (
        table.Panel()
        .title("Firing alerts, with explanations")
        .datasource(POSTGRES)
        .with_target(Sql(firing_sql, "table"))
        .override_by_name("explanation", [DynamicConfigValue(id_val="custom.width", value=700)])
    )
    history_sql = f"""
        SELECT fired_at AS "fired", resolved_at AS "resolved", ticker, rule, severity, state, value
        FROM alerts
        WHERE $__timeFilter(fired_at) AND {TICKERS}
        ORDER BY fired_at DESC
    """
    history = (
        table.Panel().title("Alert history (fired in range)").datasource(POSTGRES)
        .with_target(Sql(history_sql, "table"))
    )
    posts_sql = f"""
        SELECT p.published_at AS "time", pt.ticker, s.score, s.label,
               COALESCE(p.title, LEFT(p.text, 160)) AS headline, p.source, p.url
        FROM posts p
        JOIN post_tickers pt ON pt.post_id = p.id
        JOIN LATERAL (
            SELECT score, label FROM scores WHERE scores.post_id = p.id AND scores.role = 'live'
            ORDER BY scored_at DESC, model_version DESC LIMIT 1
        ) s ON TRUE
        WHERE $__timeFilter(p.published_at) AND pt.{TICKERS} AND s.label = 'negative'
        ORDER BY p.published_at DESC, s.score ASC
        LIMIT 50
    """
    posts = (
        table.Panel()
        .title("Latest negative posts (most negative first within a minute)")
        .description("Click a headline to open the post.")
        .datasource(POSTGRES)
        .with_target(Sql(posts_sql, "table"))
        .override_by_name("headline", [
            DynamicConfigValue(id_val="links", value=[
                DashboardLink(title="open post", url="${__data.fields.url}", target_blank=True),
            ]),
            DynamicConfigValue(id_val="custom.width", value=640),
        ])
        .override_by_name("score", [DynamicConfigValue(id_val="decimals", value=2)])
    )
    alert_marks = (
        db.AnnotationQuery()
        .name("Alerts")
        .datasource(POSTGRES)
        .enable(True)
        .icon_color("red")
        .target(SqlAnnotationTargetBuilder(f"""
            SELECT fired_at AS "time", COALESCE(resolved_at, fired_at) AS "timeend",
                   ticker || ': ' || rule || ' (' || severity || ') ' || explanation AS text,
                   ticker || ',' || rule AS tags
            FROM alerts
            WHERE $__timeFilter(fired_at) AND {TICKERS}
        """))
    )
    board = (
        db.Dashboard("Market sentiment")
        .uid(UID)
        .description("Per-company sentiment, volume and alerts from the finpulse database.")
        .tags(["finpulse", "sentiment"])
        .time("now-7d", "now")
        .refresh("1m")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(ticker)
        .with_variable(window)
        .annotation(alert_marks)
    )
    for panel, w, h in (
        (firing_count, 4, 5), (model, 6, 5), (market, 14, 5),
        (sentiment, 24, 9),
        (volume, 12, 8), (negative, 12, 8),
        (firing, 24, 8),
        (posts, 24, 10),
        (history, 24, 8),
    ):
        board.with_panel(grid.place(panel, w, h))
    return board

"""Every panel shows data: the real services fill PostgreSQL and a real Prometheus, then each
panel's query runs as Grafana would run it.

Every finpulse service runs (tests/dashboards/stack.py: scorer, monitor, notifier with a
webhook subscription, API, retraining) on one replayed stream of 236 posts: a calm
baseline for three companies, a burst of bad news about one (alerts fire, are delivered and
resolve), late posts and malformed messages. Prometheus scrapes every service each second.
Then every Prometheus panel query goes through Prometheus's HTTP API over the run's time
range, and every SQL panel query (annotations and the ticker variable included) runs on
PostgreSQL with the dashboard's variables and Grafana's macros substituted. A query that
returns nothing, or names a metric or column that does not exist, fails. Three exceptions,
each a real metric (checked): ``ONLY_A_COMPLETED_RETRAIN`` (set only by a retraining run
that completes) and ``ONLY_WITH_A_SHADOW_MODEL`` (set only by a scorer running a shadow
model), whose queries are skipped, and ``ONLY_AFTER_A_TRANSIENT_FAULT`` (the scorer's
retries; its query must fall back to ``or vector(0)``, and that 0 is what it returns).

What each query returned is written to ``artifacts/panels.json`` (git-ignored).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_ADMIN_URL
from tests.dashboards.queries import dashboards, exported_metrics, metric_names, targets
from tests.dashboards.stack import (
    ONLY_A_COMPLETED_RETRAIN,
    ONLY_AFTER_A_TRANSIENT_FAULT,
    ONLY_WITH_A_SHADOW_MODEL,
    Stack,
    running_stack,
)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
RATE_INTERVAL = "5s"  # Grafana: max($__interval + scrape interval, 4 x scrape interval), scrape = 1 s

BOARDS = dashboards()
SQL_BOARD = BOARDS["finpulse-market-sentiment"]
PROM_BOARD = BOARDS["finpulse-pipeline-health"]
PROM_QUERIES = [
    pytest.param(panel, target, id=f"{panel['title']}/{target['refId']}") for panel, target in targets(PROM_BOARD)
]
SQL_QUERIES = [(panel["title"], target["rawSql"], target["format"]) for panel, target in targets(SQL_BOARD)]
SQL_QUERIES += [(f"annotation {a['name']}", a["target"]["rawSql"], "table") for a in SQL_BOARD["annotations"]["list"]]
SQL_QUERIES += [(f"variable {v['name']}", v["query"], "table")
                for v in SQL_BOARD["templating"]["list"] if v["type"] == "query"]
VARIABLES = [("All", "1h"), ("BA", "1m")]

# Panels whose data must also move (not just exist) during the run.
MUST_BE_POSITIVE = {
    "Posts scored / s", "Posts scored and stored", "Messages consumed by topic", "Dead-letter rate by reason",
    "Batch size (posts)", "Inference latency per batch", "End-to-end latency (publish -> stored)",
    "Database write latency", "Alerts firing", "Alerts firing by rule", "Targets up", "Model version served",
    "Alerts fired and resolved by rule", "Late posts by outcome", "Monitor pass", "Deliveries by channel and status",
    "Delivery latency", "API requests by route and status", "API latency by route", "Retraining runs by decision",
    "Since last retraining run",
}

RESULTS: dict[str, Any] = {}


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    name = f"finpulse_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def stack(broker: str, pg_url: str, tmp_path_factory) -> Iterator[Stack]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus; .ci/run does)")
    try:
        with running_stack(broker, pg_url, tmp_path_factory.mktemp("stack")) as running:
            yield running
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "panels.json").write_text(json.dumps(RESULTS, indent=2, sort_keys=True, default=str))


def test_the_services_were_used(stack: Stack):
    """The webhook got the first (refused) attempt and the retry; the API answered both rounds."""
    assert stack.webhook_requests >= 3
    # The hour after the burst closed in phase 3: the burst's hour-long alerts resolved then.
    assert ("resolved", "BA", "1h") in stack.late_events, stack.late_events
    assert stack.api_statuses == [200, 200, 200, 401, 200] * 2


def test_metrics_no_service_here_produces_are_real():
    assert (ONLY_A_COMPLETED_RETRAIN | ONLY_AFTER_A_TRANSIENT_FAULT | ONLY_WITH_A_SHADOW_MODEL
            <= exported_metrics())


def grafana_promql(expr: str, stack: Stack) -> str:
    """Substitute the Grafana variables a Prometheus panel may use."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", "1s")
    expr = expr.replace("$__range", f"{math.ceil(stack.end - stack.start)}s")
    assert "$" not in expr, f"unhandled Grafana variable in {expr}"
    return expr


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = [float(v) for series in result for _, v in series.get("values", [series.get("value")]) if v]
    return [v for v in values if math.isfinite(v)]


@pytest.mark.parametrize(("panel", "target"), PROM_QUERIES)
def test_prometheus_panel_returns_data(stack: Stack, panel: dict[str, Any], target: dict[str, Any]):
    names = metric_names(target["expr"])
    if names and names <= ONLY_A_COMPLETED_RETRAIN:
        RESULTS[f"prometheus: {panel['title']} / {target['refId']}"] = "skipped: only a completed retraining run"
        pytest.skip(f"{sorted(names)}: set only by a completed retraining run (tests/services/test_retrain.py)")
    if names and names <= ONLY_WITH_A_SHADOW_MODEL:
        RESULTS[f"prometheus: {panel['title']} / {target['refId']}"] = "skipped: only with a shadow model"
        pytest.skip(f"{sorted(names)}: set only by a scorer running a shadow model (tests/services/test_shadow.py)")
    prom = stack.prometheus
    known = set(prom.api("label/__name__/values"))
    for name in names:
        if name in ONLY_AFTER_A_TRANSIENT_FAULT:
            # No fault, no series: the panel must say 0 rather than "No data".
            assert name not in known, f"{name}: a transient fault happened; drop it from the list"
            assert target["expr"].rstrip().endswith("or vector(0)"), f"{panel['title']}: {name} needs a default"
            continue
        assert name in known or f"{name}_bucket" in known, f"{panel['title']}: no metric {name} in Prometheus"
    expr = grafana_promql(target["expr"], stack)
    if target.get("instant"):
        result = prom.query(expr, at=stack.end)
    else:
        result = prom.query_range(expr, stack.start, stack.end)
    values = finite_values(result)
    RESULTS[f"prometheus: {panel['title']} / {target['refId']}"] = {
        "expr": expr, "series": len(result), "finite_samples": len(values),
        "min": min(values, default=None), "max": max(values, default=None),
        "labels": [s["metric"] for s in result][:6],
    }
    assert result, f"{panel['title']}: {expr} returned no series"
    assert values, f"{panel['title']}: {expr} returned only NaN"
    if panel["title"] in MUST_BE_POSITIVE:
        assert max(values) > 0, f"{panel['title']}: {expr} never rose above 0"


def grafana_sql(sql: str, *, time_from: datetime, time_to: datetime, tickers: list[str], window: str) -> str:
    """Substitute Grafana's PostgreSQL macros and the dashboard's variables, as Grafana does."""
    def iso(at: datetime) -> str:
        return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    sql = re.sub(r"\$__timeFilter\(([\w.]+)\)",
                 lambda m: f"{m.group(1)} BETWEEN '{iso(time_from)}' AND '{iso(time_to)}'", sql)
    sql = sql.replace("${ticker:sqlstring}", ",".join(f"'{t}'" for t in tickers))
    sql = sql.replace("${window}", window).replace("$window", window)
    assert "$" not in sql, f"unhandled Grafana macro or variable in {sql}"
    return sql


@pytest.mark.parametrize(("ticker", "window"), VARIABLES, ids=[f"{t}-{w}" for t, w in VARIABLES])
@pytest.mark.parametrize(("title", "sql", "fmt"), SQL_QUERIES, ids=[q[0] for q in SQL_QUERIES])
def test_sql_panel_returns_rows(stack: Stack, title: str, sql: str, fmt: str, ticker: str, window: str):
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            every = [row[0] for row in conn.execute(sa.text("SELECT DISTINCT ticker FROM aggregates ORDER BY 1"))]
            assert {"AAPL", "BA", "MSFT"} <= set(every)
            tickers = every if ticker == "All" else [ticker]
            query = grafana_sql(sql, time_from=stack.published[0] - timedelta(hours=1),
                                time_to=stack.published[1] + timedelta(hours=1), tickers=tickers, window=window)
            result = conn.execute(sa.text(query))
            columns = list(result.keys())
            rows = result.fetchall()
    finally:
        engine.dispose()
    RESULTS[f"sql [{ticker}, {window}]: {title}"] = {
        "rows": len(rows), "columns": columns, "first": [str(v)[:80] for v in rows[0]] if rows else None,
    }
    assert rows, f"{title}: no rows for ticker={ticker} window={window}:\n{query}"
    if fmt == "time_series":
        assert columns[0] == "time", f"{title}: a time series needs a time column first"

""""Pipeline health": the operators' dashboard, read from Prometheus.

Every metric in docs/metrics.md appears in at least one panel, and every metric a panel
names exists (tests/dashboards/ check both, and run every query against a real
Prometheus scraping the real services). ``$__rate_interval`` is Grafana's window for
``rate()``: at least four scrape intervals.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    FieldColorModeId,
    Threshold,
    ThresholdsMode,
)

from dashboards.common import PROMETHEUS, Layout

UID = "finpulse-pipeline-health"
RATE = "[$__rate_interval]"


def q(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> prometheus.Dataquery:
    """A Prometheus target (range query unless ``instant``)."""
    target = prometheus.Dataquery().expr(" ".join(expr.split())).ref_id(ref).datasource(PROMETHEUS)
    if legend:
        target = target.legend_format(legend)
    return target.instant() if instant else target.range()


def quantiles(metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[prometheus.Dataquery]:
    """p50/p95/p99 of a histogram, optionally per label ``by``."""
    group = f"le, {by}" if by else "le"
    out = []
    for i, quantile in enumerate(qs):
        legend = f"p{round(quantile * 100)}" + (f" {{{{{by}}}}}" if by else "")
        expr = f"histogram_quantile({quantile}, sum by ({group}) (rate({metric}_bucket{RATE})))"
        out.append(q(expr, legend, chr(ord("A") + i)))
    return out


def series(title: str, targets: list[prometheus.Dataquery], unit: str = "short",
           description: str = "") -> timeseries.Panel:
    panel = (
        timeseries.Panel().title(title).datasource(PROMETHEUS).unit(unit)
        .line_width(1).fill_opacity(10).show_points(cm.VisibilityMode.NEVER)
    )
    if description:
        panel = panel.description(description)
    for target in targets:
        panel = panel.with_target(target)
    return panel


def single(title: str, expr: str, unit: str = "short", description: str = "",
           red_above: float | None = None) -> stat.Panel:
    panel = stat.Panel().title(title).datasource(PROMETHEUS).unit(unit).with_target(q(expr))
    if description:
        panel = panel.description(description)
    if red_above is not None:
        panel = (
            panel.color_scheme(db.FieldColor().mode(FieldColorModeId.THRESHOLDS))
            .thresholds(db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([
                Threshold(color="green", value=None), Threshold(color="red", value=red_above),
            ]))
        )
    return panel


def build() -> db.Dashboard:
    """The "Pipeline health" dashboard."""
    grid = Layout()
    board = (
        db.Dashboard("Pipeline health")
        .uid(UID)
        .description("finpulse services: throughput, lag, dead letters, latency, model, alerts, deliveries, "
                     "retraining.")
        .tags(["finpulse", "operations"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
    )

    def add(panel, w: int, h: int) -> None:
        board.with_panel(grid.place(panel, w, h))

    def row(title: str) -> None:
        board.with_row(grid.row(db.Row(title)))

    row("Overview")
    add(single("Targets up", 'sum(up{job=~"finpulse-.*"})', description="finpulse processes Prometheus can scrape."), 4, 4)
    # "Since ..." panels skip a gauge still at 0 (no batch/pass/run yet): "No data", not 56 years.
    add(single("Posts scored / s", f"sum(rate(finpulse_scorer_posts_scored_total{RATE}))", "ops"), 4, 4)
    add(single("Consumer lag", "sum(finpulse_scorer_consumer_lag_messages)", "short",
               "Messages not yet consumed, over all scorers.", red_above=10000), 4, 4)
    add(single("Since last batch", "time() - max(finpulse_scorer_last_batch_timestamp_seconds > 0)", "s",
               "Seconds since any scorer committed a batch.", red_above=300), 4, 4)
    add(single("Alerts firing", "sum(finpulse_monitor_alerts_firing)", red_above=1), 4, 4)
    add(single("Outbox pending", "sum(finpulse_notifier_outbox_pending)", description="Alert deliveries waiting to be sent.",
               red_above=100), 4, 4)
    add(table.Panel().title("Model version served").datasource(PROMETHEUS)
        .description("One row per model version the scorers serve (more than one during a rollout).")
        .with_target(q('count by (version, base, method) (finpulse_scorer_model_info{version!=""})', instant=True)
                     .format("table")), 24, 4)

    row("Throughput and lag")
    add(series("Messages consumed by topic", [
        q(f"sum by (topic) (rate(finpulse_ingest_messages_consumed_total{RATE}))", "{{topic}}")], "ops"), 8, 8)
    add(series("Posts scored and stored", [
        q(f"sum(rate(finpulse_scorer_posts_scored_total{RATE}))", "scored"),
        q(f"sum(rate(finpulse_monitor_scores_stored_total{RATE}))", "new rows stored", "B"),
    ], "ops", "Scored counts redeliveries again; stored counts new rows only."), 8, 8)
    add(series("Consumer lag by scorer", [
        q('sum by (instance) (finpulse_scorer_consumer_lag_messages{job="finpulse-scorer"})', "{{instance}}")], "short"), 8, 8)
    add(series("Stalled partitions by scorer", [
        q('sum by (instance) (finpulse_scorer_stalled_partitions{job="finpulse-scorer"})', "{{instance}}")], "short",
        "Partitions with messages waiting that a scorer has not moved on for scorer.stall_after_s; "
        "see docs/runbooks.md#partition-stalled."), 8, 8)
    add(series("Dead-letter rate by reason", [
        q(f"sum by (reason) (rate(finpulse_ingest_messages_invalid_total{RATE}))", "{{reason}}")], "ops",
        "Messages refused to finpulse.dlq; see docs/runbooks.md#dlq-rate-high."), 8, 8)
    add(series("Batch size (posts)", quantiles("finpulse_scorer_batch_size_posts"), "short"), 8, 8)
    add(series("Scorer faults and retries", [
        q(f"sum by (kind) (rate(finpulse_scorer_faults_total{RATE}))", "fault {{kind}}"),
        # Retries exist only after a transient fault (a series appears on the first one), so
        # a healthy scorer shows 0 rather than "No data".
        q(f"sum by (operation) (rate(finpulse_scorer_retries_total{RATE})) or vector(0)", "retry {{operation}}",
          "B"),
    ], "ops"), 8, 8)

    row("Latency")
    add(series("Inference latency per batch", quantiles("finpulse_scorer_inference_latency_seconds"), "s"), 8, 8)
    add(series("End-to-end latency (publish -> stored)",
               quantiles("finpulse_pipeline_end_to_end_latency_seconds"), "s"), 8, 8)
    add(series("Database write latency", quantiles("finpulse_monitor_db_write_latency_seconds"), "s"), 8, 8)

    row("Monitor and alerts")
    add(series("Alerts fired and resolved by rule", [
        q(f"sum by (rule, severity) (increase(finpulse_monitor_alerts_fired_total{RATE}))", "fired {{rule}} ({{severity}})"),
        q(f"sum by (rule) (increase(finpulse_monitor_alerts_resolved_total{RATE}))", "resolved {{rule}}", "B"),
    ], "short"), 8, 8)
    add(series("Alerts firing by rule", [q("sum by (rule) (finpulse_monitor_alerts_firing)", "{{rule}}")]), 8, 8)
    add(series("Monitor pass", [
        *quantiles("finpulse_monitor_pass_duration_seconds", qs=(0.5, 0.95)),
        q("time() - max(finpulse_monitor_last_pass_timestamp_seconds > 0)", "since last pass", "C"),
    ], "s"), 8, 8)
    add(series("Late posts by outcome", [
        q(f"sum by (outcome) (rate(finpulse_monitor_late_posts_total{RATE}))", "{{outcome}}")], "ops"), 12, 8)
    add(series("Dirty windows awaiting re-aggregation", [
        q("sum(finpulse_monitor_dirty_windows)", "dirty windows")]), 12, 8)

    row("Deliveries and API")
    add(series("Deliveries by channel and status", [
        q(f"sum by (channel, status) (rate(finpulse_notifier_deliveries_total{RATE}))", "{{channel}} {{status}}")],
        "ops"), 8, 8)
    add(series("Delivery latency", quantiles("finpulse_notifier_delivery_latency_seconds", qs=(0.5, 0.95)), "s"), 8, 8)
    add(series("Outbox pending", [q("sum(finpulse_notifier_outbox_pending)", "pending")]), 8, 8)
    add(series("API requests by route and status", [
        q(f"sum by (route, status) (rate(finpulse_api_requests_total{RATE}))", "{{route}} {{status}}")], "reqps"),
        12, 8)
    add(series("API latency by route", quantiles("finpulse_api_request_duration_seconds", by="route", qs=(0.95,)),
               "s"), 12, 8)

    row("Shadow model")
    add(series("Shadow agreement by source", [
        q(f'sum by (source) (rate(finpulse_scorer_shadow_scored_total{{agree="true"}}{RATE})) '
          f"/ sum by (source) (rate(finpulse_scorer_shadow_scored_total{RATE}))", "{{source}}")],
        "percentunit", "Share of posts where the shadow model chose the champion's label "
        "(`finpulse registry shadow VERSION`; details: `finpulse query shadow`)."), 8, 8)
    add(series("Median confidence by model role", [
        q(f"histogram_quantile(0.5, sum by (le, role, source) (rate(finpulse_scorer_confidence_ratio_bucket{RATE})))",
          "{{role}} {{source}}")], "percentunit",
        "Top-class probability of the champion's and the shadow model's predictions."), 8, 8)
    add(series("Shadow model cost and failures", [
        q(f"histogram_quantile(0.95, sum by (le) (rate(finpulse_scorer_shadow_inference_latency_seconds_bucket{RATE})))",
          "p95 shadow inference (s)"),
        q(f"sum by (stage) (rate(finpulse_scorer_shadow_failures_total{RATE}))", "failures {{stage}} /s", "B"),
    ], "short", "Shadow inference time per batch, and shadow failures (counted; the live path goes on)."), 8, 8)
    add(table.Panel().title("Shadow model").datasource(PROMETHEUS)
        .description("The version each scorer runs in shadow beside the champion.")
        .with_target(q('count by (version) (finpulse_scorer_shadow_model_info{version!=""})', instant=True)
                     .format("table")), 24, 4)

    row("Retraining")
    add(series("Retraining runs by decision", [
        q("sum by (decision) (increase(finpulse_retrain_runs_total[1d]))", "{{decision}}")], "short",
        "Runs of `finpulse retrain` in the last day: promoted, rejected by the gate, or failed."), 8, 8)
    add(single("Since last retraining run", "time() - max(finpulse_retrain_last_run_timestamp_seconds > 0)", "s",
               "Seconds since a retraining run ended (the schedule runs daily).", red_above=2 * 86400), 8, 8)
    add(series("Gold-set macro-F1 (last run)", [
        q("max by (model) (finpulse_retrain_gold_macro_f1)", "{{model}}")], "percentunit",
        "The champion and the challenger on the frozen gold set, as the last completed run measured them."),
        8, 8)
    return board

"""finpulse's Prometheus metrics, on a registry passed in, and the ``/metrics`` HTTP endpoint.

Names follow ``finpulse_<stage>_<what>_<unit>``; counters end in ``_total``. Labels are
bounded (topic, reason, rule, severity, model version): per-ticker series belong in the
database, not in Prometheus. Tests build ``Metrics(CollectorRegistry())`` and read values
with ``registry.get_sample_value``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

logger = logging.getLogger(__name__)

# Seconds, from a fast GPU batch (ms) to a backed-up pipeline (minutes). Finer around the
# 1 s end-to-end goal: with only 0.5 and 1, any p99 between them read as ~0.99 s.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1,
    1.5,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
# A prediction's confidence (its top probability) lies in [1/3, 1] for three labels.
CONFIDENCE_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
# Where a shadow model can fail; each is counted, logged and never stops the live path.
SHADOW_STAGES = ("load", "score", "store")


class Metrics:
    """Every metric finpulse exports.

    Args:
        registry: where to register; None uses prometheus_client's global registry
            (one ``Metrics`` per process then).

    Attributes:
        messages_consumed: raw messages read from Kafka, by topic.
        messages_invalid: messages sent to the DLQ, by reason (``not_json``, ``invalid``, ...).
        posts_scored: posts the model scored.
        scores_stored: new score rows committed to the database.
        batch_size: posts per scoring batch.
        inference_latency: seconds of model inference per batch.
        end_to_end_latency: seconds from the Kafka publish timestamp to the rows committed.
        db_write_latency: seconds per database write transaction.
        alerts_fired: alerts fired, by rule and severity.
        alerts_firing: alerts currently firing, by rule.
        alerts_resolved: alerts resolved, by rule.
        late_posts: scores for already judged windows, by outcome (rejudged, too_late).
        monitor_pass_duration: seconds per monitor pass.
        monitor_last_pass: Unix time of the last completed monitor pass.
        dirty_windows: (ticker, minute) buckets waiting for re-aggregation.
        model_info: the model version being served.
        last_batch_timestamp: Unix time of the last committed batch.
        consumer_lag: messages behind the newest offset, summed over partitions.
        stalled_partitions: assigned partitions with messages waiting that have not moved
            for ``scorer.stall_after_s``.
        notifier_deliveries: delivery attempts by channel and outcome (delivered, retried, dead).
        notifier_outbox_pending: alert events not yet fanned out plus deliveries not yet sent.
        notifier_delivery_latency: seconds from the alert event stored to its delivery.
        api_requests: API requests by method, route template and status code.
        api_request_duration: API request handling time by route template.
        scorer_faults: faults the scorer handled, by kind.
        scorer_retries: retries after transient faults, by operation.
        retrain_runs: retraining runs, by decision (``promoted``, ``rejected``, ``failed``).
        retrain_last_run: Unix time the last retraining run ended.
        retrain_gold_macro_f1: gold-set macro-F1 of the last run's champion and challenger.
        confidence: prediction confidence by model role (``champion``, ``shadow``) and source.
        shadow_scored: posts the shadow model scored, by source and agreement with the champion.
        shadow_failures: shadow-model failures, by stage (``SHADOW_STAGES``).
        shadow_inference_latency: seconds of shadow-model inference per batch.
        shadow_info: the shadow model version (empty when none runs).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {}
        self.registry = registry
        self.messages_consumed = Counter(
            "finpulse_ingest_messages_consumed_total",
            "Raw messages read from Kafka.",
            ["topic"],
            **kw,
        )
        self.messages_invalid = Counter(
            "finpulse_ingest_messages_invalid_total",
            "Messages that could not be decoded or validated (sent to the DLQ).",
            ["reason"],
            **kw,
        )
        self.posts_scored = Counter(
            "finpulse_scorer_posts_scored_total", "Posts scored by the model.", **kw
        )
        self.scores_stored = Counter(
            "finpulse_monitor_scores_stored_total",
            "New score rows committed to the database.",
            **kw,
        )
        self.batch_size = Histogram(
            "finpulse_scorer_batch_size_posts",
            "Posts per scoring batch.",
            buckets=BATCH_SIZE_BUCKETS,
            **kw,
        )
        self.inference_latency = Histogram(
            "finpulse_scorer_inference_latency_seconds",
            "Model inference time per batch.",
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.end_to_end_latency = Histogram(
            "finpulse_pipeline_end_to_end_latency_seconds",
            "Time from the Kafka publish timestamp to the scored rows being committed.",
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.db_write_latency = Histogram(
            "finpulse_monitor_db_write_latency_seconds",
            "Time per database write transaction.",
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.alerts_fired = Counter(
            "finpulse_monitor_alerts_fired_total", "Alerts fired.", ["rule", "severity"], **kw
        )
        self.alerts_firing = Gauge(
            "finpulse_monitor_alerts_firing", "Alerts currently firing.", ["rule"], **kw
        )
        self.alerts_resolved = Counter(
            "finpulse_monitor_alerts_resolved_total", "Alerts resolved.", ["rule"], **kw
        )
        self.late_posts = Counter(
            "finpulse_monitor_late_posts_total",
            "New scores for windows the rules had already judged, by outcome "
            "(rejudged: the window was re-opened; too_late: beyond the allowed lateness).",
            ["outcome"],
            **kw,
        )
        self.monitor_pass_duration = Histogram(
            "finpulse_monitor_pass_duration_seconds",
            "Time per monitor pass (re-aggregation and rule evaluation).",
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.monitor_last_pass = Gauge(
            "finpulse_monitor_last_pass_timestamp_seconds",
            "Unix time of the last completed monitor pass.",
            **kw,
        )
        self.dirty_windows = Gauge(
            "finpulse_monitor_dirty_windows",
            "Dirty (ticker, minute) buckets waiting to be re-aggregated.",
            **kw,
        )
        self.model_info = Info("finpulse_scorer_model", "The model version being served.", **kw)
        self.last_batch_timestamp = Gauge(
            "finpulse_scorer_last_batch_timestamp_seconds",
            "Unix time of the last committed batch.",
            **kw,
        )
        self.consumer_lag = Gauge(
            "finpulse_scorer_consumer_lag_messages",
            "Messages behind the newest offset, summed over the assigned partitions.",
            **kw,
        )
        self.stalled_partitions = Gauge(
            "finpulse_scorer_stalled_partitions",
            "Assigned partitions with messages waiting whose position has not moved for "
            "scorer.stall_after_s.",
            **kw,
        )
        self.scorer_faults = Counter(
            "finpulse_scorer_faults_total",
            "Faults the scorer handled, by kind (transient, message, internal, fatal).",
            ["kind"],
            **kw,
        )
        self.scorer_retries = Counter(
            "finpulse_scorer_retries_total",
            "Retries after a transient fault, by operation (store, publish, commit, poll, reload).",
            ["operation"],
            **kw,
        )

        self.notifier_deliveries = Counter(
            "finpulse_notifier_deliveries_total",
            "Alert delivery attempts, by channel and outcome (delivered, retried, dead).",
            ["channel", "status"],
            **kw,
        )
        self.notifier_outbox_pending = Gauge(
            "finpulse_notifier_outbox_pending",
            "Alert events not yet fanned out plus deliveries not yet delivered or dead.",
            **kw,
        )
        self.notifier_delivery_latency = Histogram(
            "finpulse_notifier_delivery_latency_seconds",
            "Time from the alert event being stored to its delivery.",
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.api_requests = Counter(
            "finpulse_api_requests_total",
            "API requests, by method, route template and status code.",
            ["method", "route", "status"],
            **kw,
        )
        self.api_request_duration = Histogram(
            "finpulse_api_request_duration_seconds",
            "API request handling time, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.retrain_runs = Counter(
            "finpulse_retrain_runs_total",
            "Retraining runs, by the gate's decision (promoted, rejected) or failed.",
            ["decision"],
            **kw,
        )
        self.retrain_last_run = Gauge(
            "finpulse_retrain_last_run_timestamp_seconds",
            "Unix time the last retraining run ended.",
            **kw,
        )
        self.retrain_gold_macro_f1 = Gauge(
            "finpulse_retrain_gold_macro_f1",
            "Macro-F1 on the frozen gold set in the last retraining run.",
            ["model"],
            **kw,
        )

        self.confidence = Histogram(
            "finpulse_scorer_confidence_ratio",
            "Prediction confidence (top class probability), by model role and source.",
            ["role", "source"],
            buckets=CONFIDENCE_BUCKETS,
            **kw,
        )
        self.shadow_scored = Counter(
            "finpulse_scorer_shadow_scored_total",
            "Posts the shadow model scored beside the champion, by source and whether both "
            "chose the same label (agree: true, false).",
            ["source", "agree"],
            **kw,
        )
        self.shadow_failures = Counter(
            "finpulse_scorer_shadow_failures_total",
            "Shadow-model failures, by stage (load, score, store); the live path goes on.",
            ["stage"],
            **kw,
        )
        for stage in SHADOW_STAGES:
            self.shadow_failures.labels(stage=stage)
        self.shadow_inference_latency = Histogram(
            "finpulse_scorer_shadow_inference_latency_seconds",
            "Shadow-model inference time per batch (added to the batch's time).",
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.shadow_info = Info(
            "finpulse_scorer_shadow_model", "The shadow model version (empty: none).", **kw
        )
        self.shadow_info.info({"version": ""})

    def set_model(self, version: str, *, base: str = "", method: str = "") -> None:
        """Publish the model version being served (one series, replaced on hot reload)."""
        self.model_info.info({"version": version, "base": base, "method": method})

    def set_shadow(self, version: str | None) -> None:
        """Publish the shadow model version (None: no shadow model runs)."""
        self.shadow_info.info({"version": version or ""})


class MetricsServer:
    """A running ``/metrics`` endpoint; ``shutdown()`` stops it and frees the port."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(metrics: Metrics, host: str, port: int) -> tuple[MetricsServer, int]:
    """Serve ``metrics`` at ``http://host:port/metrics`` from a daemon thread.

    Args:
        metrics: the metrics to expose (their registry, or the global one).
        host: the address to bind.
        port: the port; 0 picks a free one.

    Returns:
        The server (call ``shutdown()`` to stop it) and the port it listens on.

    Raises:
        OSError: the address is in use or cannot be bound.
    """
    kw: dict[str, Any] = {"registry": metrics.registry} if metrics.registry is not None else {}
    server, thread = start_http_server(port, addr=host, **kw)
    real_port = int(server.server_address[1])
    logger.info("metrics at http://%s:%d/metrics", host, real_port)
    return MetricsServer(server, thread), real_port

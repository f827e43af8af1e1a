"""Prometheus metrics on a fresh registry, and the real /metrics endpoint."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry

from finpulse.metrics import Metrics, serve


def test_metrics_record_on_their_own_registry() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.messages_consumed.labels(topic="finpulse.news").inc(3)
    metrics.messages_invalid.labels(reason="not_json").inc()
    metrics.posts_scored.inc(3)
    metrics.batch_size.observe(3)
    metrics.inference_latency.observe(0.02)
    metrics.end_to_end_latency.observe(1.5)
    metrics.alerts_fired.labels(rule="sentiment_drop", severity="warning").inc()
    metrics.set_model("v1", base="minilm", method="lora")
    sample = registry.get_sample_value
    assert sample("finpulse_ingest_messages_consumed_total", {"topic": "finpulse.news"}) == 3
    assert sample("finpulse_ingest_messages_invalid_total", {"reason": "not_json"}) == 1
    assert sample("finpulse_scorer_posts_scored_total") == 3
    assert sample("finpulse_scorer_batch_size_posts_count") == 1
    assert sample("finpulse_scorer_inference_latency_seconds_bucket", {"le": "0.025"}) == 1
    assert sample("finpulse_scorer_inference_latency_seconds_bucket", {"le": "0.01"}) == 0
    assert sample("finpulse_pipeline_end_to_end_latency_seconds_sum") == 1.5
    assert (
        sample(
            "finpulse_monitor_alerts_fired_total", {"rule": "sentiment_drop", "severity": "warning"}
        )
        == 1
    )
    assert (
        sample("finpulse_scorer_model_info", {"version": "v1", "base": "minilm", "method": "lora"})
        == 1
    )
    # A second Metrics on another registry does not clash (no global state).
    Metrics(CollectorRegistry())


def test_serve_exposes_the_metrics_over_http() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.posts_scored.inc(7)
    server, port = serve(metrics, "127.0.0.1", 0)
    try:
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert "finpulse_scorer_posts_scored_total 7.0" in body
        assert "# TYPE finpulse_monitor_db_write_latency_seconds histogram" in body
    finally:
        server.shutdown()


def test_end_to_end_p99_is_resolved_around_the_one_second_goal() -> None:
    """Latencies of 0.55-0.7 s read as a p99 under 0.75 s, not as ~0.99 s (one bucket 0.5-1)."""
    from bench.e2e import quantile, quantile_bound

    metrics = Metrics(CollectorRegistry())
    for i in range(1000):
        metrics.end_to_end_latency.observe(0.55 + 0.15 * i / 999)
    assert 0.5 < quantile(metrics, 0.99) <= 0.75
    assert quantile_bound(metrics, 0.99) == 0.75
    for _ in range(21):
        metrics.end_to_end_latency.observe(1.2)
    assert 1.0 < quantile(metrics, 0.99) <= 1.5  # 2% above 1 s: the 1 s goal is missed
    assert quantile_bound(metrics, 0.99) == 1.5

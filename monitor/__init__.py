"""The monitor stage: storage, window aggregation, alert rules, model registry and metrics.

Scored posts come in as ``finpulse.schemas.ScoredPost`` records; ``monitor.storage``
writes them idempotently, ``monitor.aggregation`` turns them into per-ticker windows,
``monitor.alerting`` runs the rules of ``monitor/rules.yaml`` over those windows, and
``monitor.metrics`` exposes what happened to Prometheus. This package never imports
``ingest`` or ``models``.
"""

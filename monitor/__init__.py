"""The monitor stage: window aggregation, alert rules and their evidence.

Scored posts are stored by ``finpulse.storage``; ``monitor.aggregation`` turns them into
per-ticker windows and ``monitor.alerting`` runs the rules of ``monitor/rules.yaml`` over
those windows. This package never imports ``ingest`` or ``models``.
"""

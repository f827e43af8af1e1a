"""Starting a service's ``/metrics`` endpoint from settings."""

from __future__ import annotations

import logging

from finpulse.errors import ConfigError
from finpulse.metrics import Metrics, MetricsServer, serve
from finpulse.settings import Settings

logger = logging.getLogger(__name__)


def serve_metrics(
    metrics: Metrics, settings: Settings, *, any_port_if_taken: bool = False
) -> tuple[MetricsServer, str] | None:
    """Serve ``metrics`` as configured; returns the server and its URL, or None when disabled.

    Args:
        metrics: what to expose.
        settings: ``metrics.enabled``, ``metrics.host``, ``metrics.port``.
        any_port_if_taken: fall back to a free port when the configured one is in use
            (the demo); a service would rather fail than be scraped at the wrong address.

    Raises:
        ConfigError: the port is in use (or the host cannot be bound).
    """
    cfg = settings.metrics
    if not cfg.enabled:
        return None
    try:
        server, port = serve(metrics, cfg.host, cfg.port)
    except OSError as exc:
        if not any_port_if_taken:
            raise ConfigError(
                f"cannot serve metrics on {cfg.host}:{cfg.port} ({exc.strerror or exc}); "
                "set FINPULSE_METRICS__PORT to a free port, or FINPULSE_METRICS__ENABLED=false",
                field="metrics.port",
            ) from exc
        logger.info("port %d is taken; serving metrics on a free port", cfg.port)
        server, port = serve(metrics, cfg.host, 0)
    return server, f"http://{cfg.host}:{port}/metrics"

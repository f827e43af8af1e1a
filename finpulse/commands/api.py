"""``finpulse api``: serve the history API (FastAPI under uvicorn) on ``api.host:api.port``."""

from __future__ import annotations

import argparse
import logging

from finpulse.settings import Settings

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("api", help="serve the history API (OpenAPI at /openapi.json)")
    parser.add_argument("--host", help="address to bind (default: api.host)")
    parser.add_argument("--port", type=int, help="port (default: api.port)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.api import create_app
    from finpulse.api.server import ApiServer
    from finpulse.errors import ConfigError
    from finpulse.metrics import Metrics
    from finpulse.services.metrics import serve_metrics
    from finpulse.storage import Storage

    if args.port is not None and not 0 <= args.port <= 65535:
        raise ConfigError("--port must be between 0 and 65535", field="api.port")
    host = args.host or settings.api.host
    port = settings.api.port if args.port is None else args.port
    _check_free(host, port)
    storage = Storage(settings.database_url)
    storage.migrate()
    metrics = Metrics()
    endpoint = serve_metrics(metrics, settings)
    try:
        server = ApiServer(create_app(storage, settings, metrics), host, port, settings.log_level)
        logger.info("API at http://%s:%d (OpenAPI: /openapi.json, docs: /docs)", host, port)
        server.run()
    finally:
        storage.dispose()
        if endpoint is not None:
            endpoint[0].shutdown()
    return 0


def _check_free(host: str, port: int) -> None:
    """Fail with one clear line when the API's address is taken (uvicorn would log and exit).

    Raises:
        ConfigError: the address cannot be bound.
    """
    import socket

    from finpulse.errors import ConfigError

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot serve the API on {host}:{port} ({exc.strerror or exc}); "
            "set FINPULSE_API__PORT to a free port",
            field="api.port",
        ) from exc

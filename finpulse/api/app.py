"""The FastAPI application: routes, error mapping, request metrics.

Errors: a parameter that does not validate is 422 and names it (FastAPI's ``detail``
list, ``loc`` = where and which); a database that cannot be reached is 503; a request
the database refuses is 400. Nothing a client sends may turn into a 500.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from finpulse import __version__
from finpulse.api import models as m
from finpulse.api.admin import build_admin_router
from finpulse.api.retraining import build_retrain_router
from finpulse.api.routes import build_router
from finpulse.api.versions import build_models_router
from finpulse.errors import StorageError
from finpulse.metrics import Metrics
from finpulse.settings import Settings
from finpulse.storage import Storage

logger = logging.getLogger(__name__)

DESCRIPTION = """History of finpulse's scored posts, sentiment series and alerts; alert
acknowledgement, subscriptions, analysts' feedback and the retraining job's runs.

Every `/v1` route needs `Authorization: Bearer <key>` (`finpulse keys create --role ...`):
**reader** reads; **analyst** also acknowledges alerts and gives feedback; **admin** also
manages subscriptions and keys. Lists are paged: pass `next_cursor` back as `cursor`.
"""


class RequestMetrics:
    """ASGI middleware counting requests by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # The template ("/v1/tickers/{ticker}/sentiment"), never the raw path: bounded.
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.api_requests.labels(method=method, route=template, status=str(status)).inc()
            self.metrics.api_request_duration.labels(route=template).observe(
                time.perf_counter() - started
            )


_METHODS = {"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"}


def create_app(storage: Storage, settings: Settings, metrics: Metrics | None = None) -> FastAPI:
    """The API over ``storage``; ``metrics`` counts requests when given.

    Args:
        storage: a migrated database.
        settings: ``api.default_limit`` and ``api.max_limit`` shape every list.
        metrics: where request metrics go; None records none.
    """
    app = FastAPI(title="finpulse", version=__version__, description=DESCRIPTION)
    app.state.storage = storage

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> JSONResponse:
        if exc.transient:
            logger.warning("API: database unreachable: %s", exc)
            return JSONResponse({"detail": "the database is unreachable; try again"}, 503,
                                headers={"Retry-After": "5"})
        logger.warning("API: database refused a request: %s", exc)
        return JSONResponse({"detail": f"the database refused the request: {exc}"}, 400)

    @app.get("/healthz", response_model=m.Health, tags=["health"])
    def healthz() -> Any:
        """Liveness and database reachability (no key needed)."""
        storage.revision()
        return {"status": "ok", "database": storage.dialect}

    app.include_router(build_router(settings.api))
    app.include_router(build_admin_router(settings.api))
    app.include_router(build_models_router())
    app.include_router(build_retrain_router(settings.api))
    if metrics is not None:
        app.add_middleware(RequestMetrics, metrics=metrics)
    return app

"""The ``/v1/models`` routes: how the shadow model compares with the live one."""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time.

from typing import Any

from fastapi import APIRouter, Depends, Request

from finpulse.api import models as m
from finpulse.api.auth import require
from finpulse.api.routes import ModelQ, TimeQ, model_param, storage_of, time_param
from finpulse.storage.comparison import shadow_report
from finpulse.storage.keys import ApiKey
from finpulse.storage.registry import ModelRegistry


def build_models_router() -> APIRouter:
    """``GET /v1/models/shadow`` (reader)."""
    router = APIRouter(prefix="/v1")
    reader = Depends(require("reader"))

    @router.get("/models/shadow", response_model=m.ShadowReport, tags=["models"])
    def shadow(
        request: Request,
        since: TimeQ = None,
        until: TimeQ = None,
        model: ModelQ = None,
        key: ApiKey = reader,
    ) -> Any:
        """The shadow model beside the live one, per source: agreement, confidence, label mix.

        Shadow scores stored in ``[since, until)``, each paired with its post's live score;
        ``model`` narrows to one shadow version (default: every version with shadow scores).
        """
        start, end = time_param(since, "since"), time_param(until, "until")
        storage = storage_of(request)
        version = model_param(storage, model)
        registry = ModelRegistry(storage)
        champion, current = registry.champion(), registry.shadow()
        return {
            "champion": champion.version if champion is not None else None,
            "shadow": current.version if current is not None else None,
            "since": start,
            "until": end,
            "items": shadow_report(storage, since=start, until=end, version=version),
        }

    return router

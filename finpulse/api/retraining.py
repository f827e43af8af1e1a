"""The ``/v1/retrain`` routes: the retraining job's recorded runs (readers may list them)."""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time, and
# the limit parameter type is built per application (from settings) inside a function.

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from finpulse.api import models as m
from finpulse.api.auth import require
from finpulse.api.routes import CursorQ, paged, storage_of
from finpulse.settings import ApiSettings
from finpulse.storage.keys import ApiKey
from finpulse.storage.retraining import get_run, page_runs

RunIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9-]{1,64}$")]


def build_retrain_router(cfg: ApiSettings) -> APIRouter:
    """``GET /v1/retrain/runs`` (paged, newest first) and ``GET /v1/retrain/runs/{run_id}``."""
    router = APIRouter(prefix="/v1/retrain")
    LimitQ = Annotated[int, Query(ge=1, le=cfg.max_limit, description=f"at most {cfg.max_limit}")]
    reader = Depends(require("reader"))

    @router.get("/runs", response_model=m.RetrainRunPage, tags=["retraining"])
    def runs(
        request: Request,
        decision: Literal["promoted", "rejected", "failed"] | None = None,
        limit: LimitQ = cfg.default_limit,
        cursor: CursorQ = None,
        key: ApiKey = reader,
    ) -> Any:
        """Retraining runs, newest first: counts, both models' metrics, decision and reason."""
        page = paged(lambda: page_runs(storage_of(request), decision=decision, limit=limit,
                                       cursor=cursor))
        return {"items": [vars(run) for run in page.items], "next_cursor": page.next_cursor}

    @router.get("/runs/{run_id}", response_model=m.RetrainRunOut, tags=["retraining"],
                responses={404: {"description": "no such run"}})
    def run(run_id: RunIdPath, request: Request, key: ApiKey = reader) -> Any:
        """One retraining run."""
        found = get_run(storage_of(request), run_id)
        if found is None:
            raise HTTPException(404, f"run_id: no retraining run {run_id!r}")
        return vars(found)

    return router

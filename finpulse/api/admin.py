"""The ``/v1`` routes admins use: subscriptions and keys; and the deliveries readers may list."""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time, and
# the limit parameter type is built per application (from settings) inside a function.

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response

from finpulse.api import models as m
from finpulse.api.auth import require
from finpulse.api.routes import CursorQ, invalid, paged, storage_of
from finpulse.settings import ApiSettings
from finpulse.storage.keys import ApiKey, create_key, list_keys, revoke_key
from finpulse.storage.subscriptions import (
    create_subscription,
    list_deliveries,
    list_subscriptions,
    remove_subscription,
)

IdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,32}$")]


def build_admin_router(cfg: ApiSettings) -> APIRouter:
    """Subscriptions (admin), deliveries (reader) and keys (admin)."""
    router = APIRouter(prefix="/v1")
    LimitQ = Annotated[int, Query(ge=1, le=cfg.max_limit, description=f"at most {cfg.max_limit}")]
    reader, admin = Depends(require("reader")), Depends(require("admin"))
    default = cfg.default_limit

    @router.get("/subscriptions", response_model=m.SubscriptionPage, tags=["subscriptions"])
    def subscriptions(request: Request, limit: LimitQ = default, cursor: CursorQ = None,
                      key: ApiKey = admin) -> Any:
        """Subscriptions, newest first (secrets are never listed)."""
        return paged(lambda: list_subscriptions(storage_of(request), limit=limit, cursor=cursor))

    @router.post("/subscriptions", response_model=m.SubscriptionCreated, status_code=201,
                 tags=["subscriptions"])
    def subscribe(body: m.SubscriptionIn, request: Request, key: ApiKey = admin) -> Any:
        """Add a subscription; the response holds its webhook secret, shown only here."""
        try:
            return create_subscription(storage_of(request), **body.model_dump())
        except ValueError as exc:
            raise invalid("body", str(exc).split(":")[0], str(exc)) from exc

    @router.delete("/subscriptions/{subscription_id}", status_code=204, tags=["subscriptions"],
                   responses={404: {"description": "no such subscription"}})
    def unsubscribe(subscription_id: IdPath, request: Request, key: ApiKey = admin) -> Response:
        """Remove a subscription; its pending deliveries are marked dead."""
        if not remove_subscription(storage_of(request), subscription_id):
            raise HTTPException(404, f"subscription_id: no subscription {subscription_id!r}")
        return Response(status_code=204)

    @router.get("/deliveries", response_model=m.DeliveryPage, tags=["subscriptions"])
    def deliveries(
        request: Request,
        status: Literal["pending", "delivered", "dead"] | None = None,
        limit: LimitQ = default,
        cursor: CursorQ = None,
        key: ApiKey = reader,
    ) -> Any:
        """Deliveries to subscribers, newest first; ``status=dead`` lists the failed ones."""
        return paged(lambda: list_deliveries(storage_of(request), status=status, limit=limit,
                                             cursor=cursor))

    @router.get("/keys", response_model=m.KeyPage, tags=["keys"])
    def keys(request: Request, limit: LimitQ = default, cursor: CursorQ = None,
             key: ApiKey = admin) -> Any:
        """API keys, oldest first (never the key itself)."""
        return paged(lambda: list_keys(storage_of(request), limit=limit, cursor=cursor))

    @router.post("/keys", response_model=m.KeyCreated, status_code=201, tags=["keys"])
    def new_key(body: m.KeyIn, request: Request, key: ApiKey = admin) -> Any:
        """Create a key; the response holds the key, shown only here."""
        created, text = create_key(storage_of(request), body.role, body.name)
        return {"id": created.id, "name": created.name, "role": created.role, "key": text}

    @router.delete("/keys/{key_id}", status_code=204, tags=["keys"],
                   responses={404: {"description": "no such active key"}})
    def revoke(key_id: IdPath, request: Request, key: ApiKey = admin) -> Response:
        """Revoke a key; requests with it get 401 from then on."""
        if not revoke_key(storage_of(request), key_id):
            raise HTTPException(404, f"key_id: no active key {key_id!r}")
        return Response(status_code=204)

    return router

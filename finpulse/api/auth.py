"""Bearer-key authentication and roles: reader < analyst < admin.

``Authorization: Bearer <key>``; a missing, malformed, unknown or revoked key is 401 (with
``WWW-Authenticate: Bearer``), a valid key whose role is too low for the route is 403.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from finpulse.storage.keys import ApiKey, authenticate

_bearer = HTTPBearer(auto_error=False, description="An API key from `finpulse keys create`.")


def require(role: str) -> Callable[..., ApiKey]:
    """A dependency that returns the request's key, which must have at least ``role``."""

    def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> ApiKey:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer key", headers={"WWW-Authenticate": "Bearer"})
        key = authenticate(request.app.state.storage, credentials.credentials)
        if key is None:
            raise HTTPException(401, "invalid or revoked key", headers={"WWW-Authenticate": "Bearer"})
        if not key.allows(role):
            raise HTTPException(403, f"this route needs the {role} role; the key is {key.role}")
        return key

    return dependency

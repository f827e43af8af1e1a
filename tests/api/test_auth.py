"""Every /v1 route: 401 without a valid key, 403 for a role below the route's, else served."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api

# The least role each route needs. A new route must be added here (test_every_route_is_listed).
ROLES = {
    ("GET", "/v1/tickers/{ticker}/sentiment"): "reader",
    ("GET", "/v1/posts"): "reader",
    ("GET", "/v1/alerts"): "reader",
    ("GET", "/v1/deliveries"): "reader",
    ("GET", "/v1/models/shadow"): "reader",
    ("POST", "/v1/alerts/{alert_id}/ack"): "analyst",
    ("POST", "/v1/feedback"): "analyst",
    ("GET", "/v1/subscriptions"): "admin",
    ("POST", "/v1/subscriptions"): "admin",
    ("DELETE", "/v1/subscriptions/{subscription_id}"): "admin",
    ("GET", "/v1/keys"): "admin",
    ("POST", "/v1/keys"): "admin",
    ("DELETE", "/v1/keys/{key_id}"): "admin",
    ("GET", "/v1/retrain/runs"): "reader",
    ("GET", "/v1/retrain/runs/{run_id}"): "reader",
}
RANK = ["reader", "analyst", "admin"]
PATHS = {"{ticker}": "ACME", "{alert_id}": "nope", "{subscription_id}": "abc123", "{key_id}": "abc123",
         "{run_id}": "20261130T000000Z-abcd1234"}
BODIES = {
    "/v1/alerts/{alert_id}/ack": {"comment": "seen"},
    "/v1/feedback": {"post_id": "ACME-bad-30-1", "label": "negative"},
    "/v1/subscriptions": {"channel": "kafka"},
    "/v1/keys": {"role": "reader"},
}


def _routes(api: Api) -> list[tuple[str, str]]:
    """Every /v1 operation, as the OpenAPI document lists them."""
    paths = api.client.get("/openapi.json").json()["paths"]
    return sorted(
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1/")
        for method in operations
    )


def _call(api: Api, method: str, template: str, headers: dict[str, str]) -> int:
    path = template
    for placeholder, value in PATHS.items():
        path = path.replace(placeholder, value)
    body = BODIES.get(template) if method == "POST" else None
    return api.client.request(method, path, headers=headers, json=body).status_code


def test_every_route_is_listed(api: Api) -> None:
    assert _routes(api) == sorted(ROLES)


@pytest.mark.parametrize(("method", "template"), sorted(ROLES))
def test_route_needs_a_valid_key_of_its_role(api: Api, method: str, template: str) -> None:
    assert _call(api, method, template, {}) == 401
    assert _call(api, method, template, {"Authorization": "Bearer fp_nothere_x"}) == 401
    assert _call(api, method, template, {"Authorization": "Basic abc"}) == 401
    assert _call(api, method, template, api.headers("revoked")) == 401
    wrong = api.keys["admin"][:-2] + ("AA" if not api.keys["admin"].endswith("AA") else "BB")
    assert _call(api, method, template, {"Authorization": f"Bearer {wrong}"}) == 401
    needed = ROLES[(method, template)]
    for role in RANK:
        status = _call(api, method, template, api.headers(role))
        if RANK.index(role) < RANK.index(needed):
            assert status == 403, role
        else:
            assert status not in (401, 403, 500), (role, status)


def test_healthz_and_openapi_need_no_key(api: Api) -> None:
    assert api.client.get("/healthz").json()["status"] == "ok"
    spec = api.client.get("/openapi.json").json()
    assert "/v1/posts" in spec["paths"] and "HTTPBearer" in spec["components"]["securitySchemes"]

"""SQL injection attempts in every text parameter: nothing returned that should not be, nothing changed.

Each payload starts with a word no stored post contains, so its honest reading matches
nothing: any row a 200 returns would have come from the injected SQL.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from finpulse.storage import tables
from tests.api.conftest import Api

PAYLOADS = [
    "zzq' AND '1'='1",
    "zzq' OR '1'='1' --",
    "zzq'; DROP TABLE posts; --",
    "zzq\"; DELETE FROM alerts; --",
    "zzq') UNION SELECT key_hash, key_hash FROM api_keys --",
    "zzq%' OR text LIKE '%",
    "zzq_%",
    "zzq\\'; UPDATE api_keys SET revoked_at = NULL; --",
]
GETS = [
    ("/v1/posts", "q"), ("/v1/posts", "ticker"), ("/v1/posts", "source"), ("/v1/posts", "since"),
    ("/v1/posts", "until"), ("/v1/posts", "cursor"), ("/v1/alerts", "ticker"),
    ("/v1/alerts", "rule"), ("/v1/alerts", "since"), ("/v1/alerts", "cursor"),
    ("/v1/deliveries", "status"), ("/v1/deliveries", "cursor"), ("/v1/subscriptions", "cursor"),
    ("/v1/keys", "cursor"),
    ("/v1/tickers/ACME/sentiment", "since"), ("/v1/tickers/ACME/sentiment", "window"),
]


def _snapshot(api: Api) -> dict[str, int]:
    with api.storage.begin() as conn:
        counts = {
            name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for name, table in tables.metadata.tables.items()
        }
        counts["revoked"] = conn.execute(
            sa.select(sa.func.count()).where(tables.api_keys.c.revoked_at.is_not(None))
        ).scalar_one()
    return counts


@pytest.mark.parametrize(("path", "param"), GETS)
def test_query_parameters(api: Api, path: str, param: str) -> None:
    before = _snapshot(api)
    hashes = [row for row in _hashes(api)]
    for payload in PAYLOADS:
        response = api.client.get(path, params={param: payload}, headers=api.headers("admin"))
        assert response.status_code in (200, 400, 422), (payload, response.status_code)
        if response.status_code == 200:
            assert response.json()["items"] == [], payload
        assert not any(h in response.text for h in hashes)
    assert _snapshot(api) == before


def _hashes(api: Api) -> list[str]:
    with api.storage.begin() as conn:
        return list(conn.execute(sa.select(tables.api_keys.c.key_hash)).scalars())


def test_path_parameters_and_bodies(api: Api) -> None:
    admin, analyst = api.headers("admin"), api.headers("analyst")
    for payload in PAYLOADS:
        before = _snapshot(api)
        quoted = payload.replace("/", "%2F").replace("#", "%23").replace("?", "%3F")
        responses = [
            api.client.get(f"/v1/tickers/{quoted}/sentiment", headers=admin),
            api.client.post(f"/v1/alerts/{quoted}/ack", headers=analyst),
            api.client.delete(f"/v1/subscriptions/{quoted}", headers=admin),
            api.client.delete(f"/v1/keys/{quoted}", headers=admin),
            api.client.post("/v1/feedback", headers=analyst,
                            json={"post_id": payload, "label": "neutral", "comment": payload}),
        ]
        for response in responses:
            assert response.status_code in (400, 404, 422), (payload, response.status_code)
        assert _snapshot(api) == before
        # Stored as data, not run as SQL: a subscription named by the payload keeps it verbatim.
        created = api.client.post("/v1/subscriptions", headers=admin, json={
            "channel": "kafka", "target": payload, "name": payload}).json()
        assert (created["name"], created["target"]) == (payload, payload)
        assert _snapshot(api)["subscriptions"] == before["subscriptions"] + 1
        assert api.client.delete(f"/v1/subscriptions/{created['id']}", headers=admin).status_code == 204

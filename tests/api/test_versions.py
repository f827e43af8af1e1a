"""The API reads one model version on request (``?model=``) and compares the shadow model with
the live one (``/v1/models/shadow``); the live views stay what they were."""

from __future__ import annotations

from datetime import datetime

from finpulse.storage.registry import ModelRegistry
from finpulse.storage.comparison import shadow_report
from finpulse.storage.versions import save_rescored, version_series
from tests.api.conftest import Api

FLIP = {"negative": "positive", "neutral": "negative", "positive": "negative"}


def _get(api: Api, path: str, **params) -> dict:
    response = api.client.get(path, params=params, headers=api.headers("reader"))
    assert response.status_code == 200, response.text
    return response.json()


def test_model_views_and_the_shadow_report(api: Api) -> None:
    live_series = _get(api, "/v1/tickers/ACME/sentiment", window="1h", limit=200)
    live_posts = _get(api, "/v1/posts", ticker="BETA", limit=200)
    stored = api.storage.scores(limit=100_000)
    acme = [p for p in stored if "ACME" in p.tickers]
    shadow = [p.model_copy(update={"model_version": "v2-shadow", "label": FLIP[p.label]})
              for p in stored if "BETA" in p.tickers]
    api.storage.save_scored([p for p in stored if "BETA" in p.tickers], shadow=shadow)
    save_rescored(api.storage, [p.model_copy(update={"model_version": "v3", "label": "negative",
                                                     "score": -0.5}) for p in acme])

    # The live views are unchanged.
    assert _get(api, "/v1/tickers/ACME/sentiment", window="1h", limit=200) == live_series
    assert _get(api, "/v1/posts", ticker="BETA", limit=200) == live_posts
    assert {p["role"] for p in live_posts["items"]} == {"live"}

    # One version's views: that version's numbers.
    series = _get(api, "/v1/tickers/ACME/sentiment", window="1h", limit=200, model="v3")
    expected = version_series(api.storage, "ACME", "1h", "v3", limit=200).items
    assert [datetime.fromisoformat(p["start"].replace("Z", "+00:00")) for p in series["items"]] == \
        [p["start"] for p in expected]
    assert [p["n"] for p in series["items"]] == [p["n"] for p in expected]
    assert all(p["negative_share"] == 1.0 and p["mean_score"] == -0.5 for p in series["items"])
    assert sum(p["n"] for p in series["items"]) == len(acme)
    posts = _get(api, "/v1/posts", model="v2-shadow", limit=200)
    assert {(p["model_version"], p["role"]) for p in posts["items"]} == {("v2-shadow", "shadow")}
    by_id = {p.id: p for p in shadow}
    assert all(p["label"] == by_id[p["id"]].label for p in posts["items"])

    # The shadow report, as the storage computes it, with the registry's current picks.
    report = _get(api, "/v1/models/shadow", since="3650d")
    assert report["champion"] is None and report["shadow"] is None
    assert report["items"] == shadow_report(api.storage)
    (news,) = report["items"]
    assert news["version"] == "v2-shadow" and news["n"] == len(shadow) and news["agreement"] == 0.0
    registry = ModelRegistry(api.storage)
    for version in ("v1", "v2-shadow"):
        registry.register(version, base="b", method="lora", metrics={}, artifact_path="/m")
    registry.promote("v1")
    registry.set_shadow("v2-shadow")
    report = _get(api, "/v1/models/shadow", model="v2-shadow")
    assert (report["champion"], report["shadow"]) == ("v1", "v2-shadow")
    assert _get(api, "/v1/models/shadow", until="2000-01-01T00:00:00Z")["items"] == []


def test_model_parameter_errors(api: Api) -> None:
    h = api.headers("reader")
    for path in ("/v1/tickers/ACME/sentiment", "/v1/posts", "/v1/models/shadow"):
        response = api.client.get(path, params={"model": "no-such-version"}, headers=h)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["query", "model"]
        assert api.client.get(path, params={"model": ""}, headers=h).status_code == 422
    assert api.client.get("/v1/models/shadow", params={"since": "yesterday"}, headers=h).status_code == 422
    assert api.client.get("/v1/models/shadow").status_code == 401

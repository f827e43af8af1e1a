"""The /v1 routes' content: pages and cursors, filters, text search, ack, feedback, subscriptions."""

from __future__ import annotations

from finpulse.storage.retraining import finish_run, start_run
from tests.api.conftest import Api


def _all_pages(api: Api, path: str, params: dict, role: str = "reader") -> list[dict]:
    items: list[dict] = []
    cursor = None
    for _ in range(100):
        response = api.client.get(path, params={**params, **({"cursor": cursor} if cursor else {})},
                                  headers=api.headers(role))
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def test_posts_pages_cover_every_post_once_in_order(api: Api) -> None:
    items = _all_pages(api, "/v1/posts", {"ticker": "acme", "limit": 37})
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)) == 47 * 6 + 12  # calm hours plus the burst
    keys = [(item["published_at"], item["id"]) for item in items]
    assert keys == sorted(keys, reverse=True)
    assert all("ACME" in item["tickers"] and item["model_version"] == "v1" for item in items)


def test_posts_filters_and_text_search(api: Api) -> None:
    negative = _all_pages(api, "/v1/posts", {"ticker": "ACME", "label": "negative", "limit": 200})
    assert negative and all(item["label"] == "negative" for item in negative)
    found = _all_pages(api, "/v1/posts", {"q": "fraud probe"})
    assert sorted(item["id"] for item in found) == sorted(f"ACME-bad-30-{i}" for i in range(12))
    assert _all_pages(api, "/v1/posts", {"q": "bankruptcy"}) == []
    window = _all_pages(api, "/v1/posts", {"ticker": "BETA", "since": "2024-03-05T00:00:00Z",
                                           "until": "2024-03-05T01:00:00"})
    assert len(window) == 6


def test_sentiment_series_and_alerts(api: Api) -> None:
    series = _all_pages(api, "/v1/tickers/ACME/sentiment", {"window": "1h", "limit": 10})
    assert len(series) == 48
    assert [p["start"] for p in series] == sorted(p["start"] for p in series)
    worst = min(series, key=lambda p: p["mean_score"])
    assert worst["start"].startswith("2024-03-05T06:00")
    alerts = _all_pages(api, "/v1/alerts", {"ticker": "ACME"})
    assert {a["rule"] for a in alerts} == {"sentiment_drop", "negative_volume_spike"}
    critical = _all_pages(api, "/v1/alerts", {"severity": "critical", "state": "resolved"})
    assert [a["rule"] for a in critical] == ["negative_volume_spike"]
    assert _all_pages(api, "/v1/alerts", {"ticker": "BETA"}) == []


def test_bad_parameters_are_4xx_naming_them(api: Api) -> None:
    h = api.headers("reader")
    for params, name in (({"limit": 0}, "limit"), ({"limit": 201}, "limit"),
                         ({"since": "yesterday"}, "since"), ({"label": "bad"}, "label"),
                         ({"ticker": "NOT A TICKER"}, "ticker"), ({"cursor": "abc"}, "cursor")):
        response = api.client.get("/v1/posts", params=params, headers=h)
        assert 400 <= response.status_code < 500, params
        assert name in response.text, (params, response.text)
    # Text PostgreSQL cannot store or compare (NUL) is refused up front, not a 500.
    assert api.client.get("/v1/posts", params={"q": "a\x00b"}, headers=h).status_code == 422
    response = api.client.post("/v1/feedback", headers=api.headers("analyst"),
                               json={"post_id": "ACME-bad-30-1", "label": "neutral",
                                     "comment": "nul \u0000 here"})
    assert response.status_code == 422 and "comment" in response.text
    response = api.client.get("/v1/tickers/ACME/sentiment", params={"window": "2h"}, headers=h)
    assert response.status_code == 422 and "window" in response.text


def test_ack_feedback_and_subscriptions(api: Api) -> None:
    alert = _all_pages(api, "/v1/alerts", {"rule": "sentiment_drop", "ticker": "ACME"})[0]
    response = api.client.post(f"/v1/alerts/{alert['id']}/ack", json={"comment": "on it"},
                               headers=api.headers("analyst"))
    assert response.status_code == 200
    assert (response.json()["acked_by"], response.json()["ack_comment"]) == ("analyst-key", "on it")

    for label in ("neutral", "negative"):
        response = api.client.post("/v1/feedback", headers=api.headers("analyst"),
                                   json={"post_id": "ACME-bad-30-3", "label": label})
        assert response.status_code == 201
    examples = api.storage.feedback_examples()
    assert [(e.label, e.source) for e in examples][-2:] == [("neutral", "news"), ("negative", "news")]
    assert "fraud probe 3" in examples[-1].text
    missing = api.client.post("/v1/feedback", headers=api.headers("analyst"),
                              json={"post_id": "nope", "label": "neutral"})
    assert missing.status_code == 404

    admin = api.headers("admin")
    created = api.client.post("/v1/subscriptions", headers=admin, json={
        "channel": "webhook", "target": "https://example.com/hook", "tickers": ["acme"],
        "min_severity": "critical"})
    assert created.status_code == 201 and len(created.json()["secret"]) >= 32
    listed = _all_pages(api, "/v1/subscriptions", {"limit": 1}, role="admin")
    assert created.json()["id"] in {s["id"] for s in listed}
    assert all("secret" not in s for s in listed)
    sub_id = created.json()["id"]
    assert api.client.delete(f"/v1/subscriptions/{sub_id}", headers=admin).status_code == 204
    assert api.client.delete(f"/v1/subscriptions/{sub_id}", headers=admin).status_code == 404
    bad = api.client.post("/v1/subscriptions", headers=admin, json={"channel": "webhook",
                                                                    "target": "ftp://x"})
    assert bad.status_code == 422 and "target" in bad.text


def test_keys_are_listed_in_pages_without_secrets(api: Api) -> None:
    keys = _all_pages(api, "/v1/keys", {"limit": 2}, role="admin")
    names = [k["name"] for k in keys]
    assert {"reader-key", "analyst-key", "admin-key", "old-key"} <= set(names)
    assert len(names) == len(set(k["id"] for k in keys))
    assert not any(secret in str(keys) for secret in api.keys.values())


def test_request_metrics_use_route_templates(api: Api) -> None:
    api.client.get("/v1/tickers/BETA/sentiment", headers=api.headers("reader"))
    value = api.registry.get_sample_value(
        "finpulse_api_requests_total",
        {"method": "GET", "route": "/v1/tickers/{ticker}/sentiment", "status": "200"})
    assert value and value >= 1
    assert api.registry.get_sample_value(
        "finpulse_api_request_duration_seconds_count", {"route": "/v1/tickers/{ticker}/sentiment"})


def test_retraining_runs_are_paged_newest_first_and_read_by_id(api: Api) -> None:
    for i in range(3):
        finish_run(api.storage, start_run(api.storage, champion="v2", trigger="manual"),
                   decision="failed", reason=f"DataError: run {i}", seconds=1.0)
    runs = _all_pages(api, "/v1/retrain/runs", {"limit": 2})
    assert len(runs) == len({r["id"] for r in runs}) >= 5
    keys = [(r["started_at"], r["id"]) for r in runs]
    assert keys == sorted(keys, reverse=True)
    assert [r["reason"] for r in runs[:3]] == ["DataError: run 2", "DataError: run 1",
                                               "DataError: run 0"]
    running = next(r for r in runs if r["trigger"].startswith("model_health:"))
    assert running["decision"] is None and running["finished_at"] is None
    failed = _all_pages(api, "/v1/retrain/runs", {"decision": "failed"})
    assert {r["decision"] for r in failed} == {"failed"} and len(failed) >= 3

    rejected = next(r for r in runs if r["decision"] == "rejected")
    one = api.client.get(f"/v1/retrain/runs/{rejected['id']}", headers=api.headers("reader"))
    assert one.status_code == 200 and one.json() == rejected
    assert one.json()["gold"]["challenger"]["macro_f1"] == 0.4
    assert one.json()["counts"] == {"replay": 10, "feedback": 2}

    h = api.headers("reader")
    missing = api.client.get("/v1/retrain/runs/20990101T000000Z-00000000", headers=h)
    assert missing.status_code == 404 and "run_id" in missing.text
    assert api.client.get("/v1/retrain/runs/a%20b", headers=h).status_code == 422
    for params, name in (({"decision": "maybe"}, "decision"), ({"cursor": "abc"}, "cursor"),
                         ({"limit": 0}, "limit")):
        response = api.client.get("/v1/retrain/runs", params=params, headers=h)
        assert 400 <= response.status_code < 500 and name in response.text, params

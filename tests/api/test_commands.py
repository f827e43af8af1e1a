"""The CLI side: keys, subscriptions, deliveries, alerts, queries, feedback; and the
``finpulse api`` / ``finpulse notifier`` processes serving and stopping on SIGTERM."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from finpulse.cli import main
from finpulse.storage import Storage
from tests.api.conftest import seed
from tests.monitor.receivers import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def seeded_url(sqlite_url: str, monkeypatch) -> str:
    storage = Storage(sqlite_url)
    storage.migrate()
    seed(storage)
    storage.dispose()
    monkeypatch.setenv("FINPULSE_DATABASE_URL", sqlite_url)
    return sqlite_url


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_create_prints_the_key_alone_on_the_last_line(seeded_url, capsys) -> None:
    code, out, _ = cli(capsys, "keys", "create", "--role", "analyst", "--name", "ann")
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert key.startswith("fp_") and " " not in key
    storage = Storage(seeded_url)
    try:
        from finpulse.storage.keys import authenticate

        assert authenticate(storage, key).role == "analyst"  # type: ignore[union-attr]
    finally:
        storage.dispose()
    code, out, _ = cli(capsys, "keys", "list", "--json")
    listed = {k["name"]: k for k in json.loads(out)}
    assert listed["ann"]["role"] == "analyst" and key not in out
    assert cli(capsys, "keys", "revoke", listed["ann"]["id"])[0] == 0
    code, _, err = cli(capsys, "keys", "revoke", listed["ann"]["id"])
    assert code == 1 and err.startswith("ConfigError: no active key")


def test_query_alerts_subscriptions_deliveries_feedback(seeded_url, capsys) -> None:
    code, out, _ = cli(capsys, "query", "sentiment", "--ticker", "ACME", "--since", "2024-03-05",
                       "--until", "2024-03-05T12:00", "--window", "1h", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 12 and rows[0]["ticker"] == "ACME"
    code, out, err = cli(capsys, "query", "posts", "--q", "fraud probe", "--limit", "5")
    assert code == 0 and out.count("ACME-bad-30-") == 5 and "more: --cursor" in err
    cursor = err.split("--cursor ")[1].strip()
    code, out, _ = cli(capsys, "query", "posts", "--q", "fraud probe", "--cursor", cursor, "--json")
    assert len(json.loads(out)) == 7

    code, out, _ = cli(capsys, "alerts", "list", "--json", "--severity", "critical")
    (alert,) = json.loads(out)
    code, out, _ = cli(capsys, "alerts", "ack", alert["id"], "--by", "ann", "--comment", "seen")
    assert code == 0 and "ann" in out
    code, out, _ = cli(capsys, "alerts", "list", "--state", "resolved")
    assert "ann" in out and "sentiment_drop" in out

    code, out, _ = cli(capsys, "subscriptions", "add", "--channel", "email", "--target",
                       "risk@example.com", "--ticker", "acme", "--min-severity", "warning", "--json")
    (sub,) = json.loads(out)
    assert sub["tickers"] == ["ACME"] and sub["secret"] is None
    code, out, _ = cli(capsys, "subscriptions", "list")
    assert "risk@example.com" in out and "seeded" in out
    assert cli(capsys, "subscriptions", "rm", sub["id"])[0] == 0
    code, _, err = cli(capsys, "subscriptions", "add", "--channel", "webhook", "--target", "nope")
    assert code == 1 and err.startswith("ConfigError: target")

    code, out, _ = cli(capsys, "deliveries", "list", "--status", "dead")
    assert code == 0 and out.strip() == "(none)"
    code, out, _ = cli(capsys, "feedback", "add", "--post", "ACME-bad-30-2", "--label", "neutral",
                       "--comment", "sarcasm", "--by", "ann", "--json")
    assert json.loads(out)[0]["author"] == "ann"
    code, _, err = cli(capsys, "feedback", "add", "--post", "missing", "--label", "neutral")
    assert code == 1 and "missing" in err


def test_bad_arguments_exit_2_with_one_line(seeded_url, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["query", "sentiment", "--ticker", "ACME", "--since", "last week"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_api_on_a_taken_port_is_one_line_and_exit_1(seeded_url, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = cli(capsys, "api", "--port", str(taken.getsockname()[1]))
    assert code == 1 and err.startswith("ConfigError: cannot serve the API on 127.0.0.1:")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_api_and_notifier_processes_serve_and_stop_on_sigterm(seeded_url, capsys) -> None:
    key = cli(capsys, "keys", "create", "--role", "reader")[1].strip().splitlines()[-1]
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FINPULSE_DATABASE_URL": seeded_url,
           "FINPULSE_METRICS__ENABLED": "false", "FINPULSE_API__PORT": str(port),
           "FINPULSE_NOTIFIER__POLL_INTERVAL_S": "0.2"}
    api = subprocess.Popen([sys.executable, "-m", "finpulse", "api"], env=env, cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    notifier = subprocess.Popen([sys.executable, "-m", "finpulse", "notifier"], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(healthy), api.stdout.read() if api.poll() is not None else "no answer"
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/alerts", timeout=5).status_code == 401
        page = httpx.get(f"{base}/v1/alerts", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert page.status_code == 200 and len(page.json()["items"]) == 2
        # The seeded subscription points at a closed port: the notifier keeps retrying it.
        storage = Storage(seeded_url)
        try:
            from finpulse.storage.subscriptions import list_deliveries

            assert wait_for(lambda: any(d["attempts"] >= 1 and d["last_error"]
                                        for d in list_deliveries(storage).items))
        finally:
            storage.dispose()
    finally:
        for process in (api, notifier):
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=60) for process in (api, notifier)]
        for process in (api, notifier):
            process.stdout.close()
    assert codes == [0, 0]

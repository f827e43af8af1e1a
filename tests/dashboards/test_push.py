"""``finpulse dashboards push`` against a real HTTP server imitating the Grafana API endpoints it uses.

Grafana itself cannot be installed here. The imitation follows Grafana's HTTP API for the
calls push makes (folders, datasource lookup by uid, POST /api/dashboards/db with overwrite,
Bearer tokens, 401/404/412 answers) and keeps what it receives, so the test checks what a
Grafana would have stored.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dashboards.build import render
from finpulse.cli import main

TOKEN = "glsa_test_token"


class FakeGrafana(ThreadingHTTPServer):
    def __init__(self, datasources: set[str]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.datasources = datasources
        self.folders: dict[str, str] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.reply(401, {"message": "invalid API key"})
            return False
        return True

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path))
        if self.path == "/api/health":  # the one endpoint Grafana serves without a token
            self.reply(200, {"commit": "abc", "database": "ok", "version": "11.3.0"})
            return
        if not self.authorised():
            return
        if self.path.startswith("/api/folders/"):
            uid = self.path.rsplit("/", 1)[1]
            if uid in self.server.folders:
                self.reply(200, {"uid": uid, "title": self.server.folders[uid]})
            else:
                self.reply(404, {"message": "folder not found"})
        elif self.path.startswith("/api/datasources/uid/"):
            uid = self.path.rsplit("/", 1)[1]
            if uid in self.server.datasources:
                self.reply(200, {"uid": uid})
            else:
                self.reply(404, {"message": "Data source not found"})
        else:
            self.reply(404, {"message": "Not found"})

    def do_POST(self) -> None:
        self.server.requests.append(("POST", self.path))
        if not self.authorised():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/api/folders":
            self.server.folders[body["uid"]] = body["title"]
            self.reply(200, {"uid": body["uid"], "title": body["title"]})
        elif self.path == "/api/dashboards/db":
            board = body["dashboard"]
            old = self.server.dashboards.get(board["uid"])
            if old is not None and not body.get("overwrite"):
                self.reply(412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"})
                return
            if body.get("folderUid") not in self.server.folders:
                self.reply(400, {"message": "folder not found"})
                return
            version = (old["version"] if old else 0) + 1
            self.server.dashboards[board["uid"]] = {"dashboard": board, "version": version,
                                                    "folderUid": body["folderUid"]}
            self.reply(200, {"id": 1, "uid": board["uid"], "url": f"/d/{board['uid']}/x",
                             "status": "success", "version": version, "slug": "x"})
        else:
            self.reply(404, {"message": "Not found"})


@pytest.fixture()
def grafana() -> Iterator[FakeGrafana]:
    server = FakeGrafana({"finpulse-postgres", "finpulse-prometheus"})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_push_creates_then_updates_the_same_dashboards(grafana, capsys):
    assert main(["dashboards", "push", "--url", grafana.url, "--token", TOKEN]) == 0
    first = capsys.readouterr().out
    assert main(["dashboards", "push", "--url", grafana.url, "--token", TOKEN]) == 0
    second = capsys.readouterr().out
    expected = render()
    assert set(grafana.dashboards) == set(expected)
    for uid, stored in grafana.dashboards.items():
        assert stored["version"] == 2
        assert stored["folderUid"] == "finpulse"
        assert stored["dashboard"]["panels"] == expected[uid]["panels"]
        assert f"{uid}: version 1" in first and f"{uid}: version 2" in second
        assert f"{grafana.url}/d/{uid}/x" in second
    assert grafana.folders == {"finpulse": "finpulse"}
    assert ("POST", "/api/folders") in grafana.requests
    assert "warning" not in first + second


def test_missing_datasource_is_reported(grafana, capsys):
    grafana.datasources.discard("finpulse-prometheus")
    assert main(["dashboards", "push", "--url", grafana.url, "--token", TOKEN]) == 0
    out = capsys.readouterr().out
    assert "warning: datasource 'finpulse-prometheus' does not exist" in out


def test_bad_token_is_one_line(grafana, capsys):
    assert main(["dashboards", "push", "--url", grafana.url, "--token", "wrong"]) == 1
    err = capsys.readouterr().err
    assert err == f"ConfigError: Grafana at {grafana.url} refused the token (401): check --token\n"
    assert grafana.dashboards == {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("url", "message"), [
    (f"http://127.0.0.1:{free_port()}", "cannot reach Grafana at http://127.0.0.1:{port}: connection refused"),
    ("http://no-such-host.invalid:3000", "cannot reach Grafana at http://no-such-host.invalid:3000: host name not found"),
    ("localhost:3000", "--url must be an http(s) URL such as http://localhost:3000, got 'localhost:3000'"),
])
def test_bad_url_is_one_line(url, message, capsys):
    assert main(["dashboards", "push", "--url", url, "--token", TOKEN]) == 1
    err = capsys.readouterr().err
    port = url.rsplit(":", 1)[-1]
    assert err == f"ConfigError: {message.format(port=port)}\n"


def test_a_server_that_is_not_grafana(capsys):
    class NotGrafana(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<h1>nothing here</h1>")

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotGrafana)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["dashboards", "push", "--url", url, "--token", TOKEN]) == 1
        assert capsys.readouterr().err == f"ConfigError: {url} does not look like Grafana (no /api/health there)\n"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_no_token(monkeypatch, capsys):
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert main(["dashboards", "push", "--url", "http://localhost:3000"]) == 1
    assert capsys.readouterr().err == "ConfigError: no Grafana token: pass --token or set GRAFANA_TOKEN\n"


def test_build_subcommand(capsys):
    assert main(["dashboards", "build", "--check"]) == 0

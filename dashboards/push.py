"""Publish the dashboards to a running Grafana with grafana-client.

Idempotent: each dashboard keeps its uid, ``overwrite=True`` replaces the previous one and
Grafana bumps its version. The dashboards go into a "finpulse" folder (created if missing).
The datasources they use must exist in that Grafana with the uids in ``dashboards/common.py``
(the compose stack provisions them); a missing one is reported, not created.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaUnauthorizedError,
)

from dashboards.build import render
from dashboards.common import DATASOURCES
from finpulse.errors import ConfigError

logger = logging.getLogger(__name__)

FOLDER_UID = "finpulse"


@dataclass(frozen=True)
class Pushed:
    uid: str
    title: str
    version: int
    url: str


def push(url: str, token: str, *, timeout_s: float = 10.0) -> tuple[list[Pushed], list[str]]:
    """Create or update every dashboard in the Grafana at ``url``.

    Args:
        url: Grafana's base URL, e.g. ``http://localhost:3000``.
        token: a service-account token (Editor or Admin).
        timeout_s: per-request timeout.

    Returns:
        The dashboards pushed (uid, title, new version, URL) and the uids of datasources the
        dashboards need that this Grafana lacks.

    Raises:
        ConfigError: the URL is not reachable or not a Grafana, or the token is refused.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"--url must be an http(s) URL such as http://localhost:3000, got {url!r}", field="url")
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    try:
        _check_is_grafana(api, url)
        _ensure_folder(api)
        missing = [uid for uid in DATASOURCES if not _datasource_exists(api, uid)]
        pushed = []
        for uid, dashboard in render().items():
            body: dict[str, Any] = {"dashboard": {**dashboard, "id": None}, "folderUid": FOLDER_UID,
                                    "overwrite": True, "message": "finpulse dashboards push"}
            result = api.dashboard.update_dashboard(body)
            pushed.append(Pushed(uid=str(result.get("uid", uid)), title=dashboard["title"],
                                 version=int(result.get("version", 0)), url=_absolute(url, result.get("url", ""))))
        return pushed, missing
    except GrafanaUnauthorizedError as exc:
        raise ConfigError(f"Grafana at {url} refused the token (401): check --token", field="token") from exc
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            raise ConfigError(f"Grafana at {url} refused the token (403): it needs the Editor role",
                              field="token") from exc
        raise ConfigError(f"Grafana at {url} refused the request: {exc.message}", field="url") from exc
    except (GrafanaException, niquests.exceptions.RequestException, ValueError) as exc:
        raise ConfigError(f"cannot reach Grafana at {url}: {_why(exc)}", field="url") from exc


def _check_is_grafana(api: GrafanaApi, url: str) -> None:
    """Grafana answers /api/health without a token, with JSON naming its database state."""
    try:
        health = api.client.GET("/health")
    except (GrafanaClientError, GrafanaServerError, ValueError) as exc:
        raise ConfigError(f"{url} does not look like Grafana (no /api/health there)", field="url") from exc
    if not isinstance(health, dict) or "database" not in health:
        raise ConfigError(f"{url} does not look like Grafana (no /api/health there)", field="url")


def _ensure_folder(api: GrafanaApi) -> None:
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as exc:
        if exc.status_code != 404 or isinstance(exc, GrafanaUnauthorizedError):
            raise
        api.folder.create_folder("finpulse", uid=FOLDER_UID)


def _datasource_exists(api: GrafanaApi, uid: str) -> bool:
    try:
        api.datasource.get_datasource_by_uid(uid)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return False
        raise
    return True


def _absolute(base: str, path: str) -> str:
    return base.rstrip("/") + path if path.startswith("/") else path


def _why(exc: Exception) -> str:
    """The gist of a connection failure, without the HTTP library's nesting."""
    text = getattr(exc, "message", "") or str(exc) or type(exc).__name__
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if "Failed to resolve" in text or "NameResolution" in text:
        return "host name not found"
    if errno:
        return errno.group(1).strip().lower()
    if "timed out" in text.lower():
        return "timed out"
    return text.splitlines()[0][:200]

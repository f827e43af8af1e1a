"""``finpulse report``: a self-contained HTML report, checked in a real headless Chromium.

The database is filled the way the services fill it: scored posts stored through
``Storage.save_scored``, then a real monitor pass aggregates them and raises the alerts.
The screenshot goes to ``artifacts/report.png`` (git-ignored).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from finpulse.cli import main
from finpulse.errors import ConfigError
from finpulse.report import resolve_range
from finpulse.report.data import parse_when
from finpulse.report.html import ERROR_HOOK, STATUS_SCRIPT
from finpulse.services.monitor import MonitorService
from finpulse.storage import Storage
from finpulse.storage.registry import ModelRegistry
from models import DEFAULT_MODEL_DIR
from monitor.rules import RuleSet
from tests.e2e.posts import calm_then_burst
from tests.records import scored

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0")


def fill(storage: Storage) -> None:
    """A day of calm news on three companies, a burst of bad news on BA, a calm hour; one monitor pass.

    The calm hour after the burst closes the burst's windows: alerts fire only on closed windows.
    """
    baseline, burst = calm_then_burst(hours=24)
    trailing = [p for p in calm_then_burst(hours=26)[0] if "-25-" in p.id]
    posts = [scored(p.id, p.published_at, p.tickers, 0.45, text=p.text) for p in baseline + trailing]
    posts += [scored(p.id, p.published_at, ("BA",), -0.9, text=p.text) for p in burst]
    storage.save_scored([p.model_copy(update={"url": f"https://news.example.com/{p.id}"}) for p in posts])
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    registry = ModelRegistry(storage)
    registry.register(manifest["version"], base=manifest["base"], method=manifest["method"],
                      metrics=manifest["metrics"], artifact_path=str(DEFAULT_MODEL_DIR))
    registry.promote(manifest["version"])
    fired = MonitorService(storage, RuleSet.load()).run_once().fired
    assert {a.ticker for a in fired} == {"BA"}


def test_durations_and_dates():
    assert parse_when("7d") == timedelta(days=7)
    assert parse_when("36h") == timedelta(hours=36)
    assert parse_when("2w") == timedelta(weeks=2)
    assert parse_when("2026-11-02") == datetime(2026, 11, 2, tzinfo=timezone.utc)
    assert parse_when("2026-11-02T08:00:00+01:00") == datetime(2026, 11, 2, 7, tzinfo=timezone.utc)
    with pytest.raises(ConfigError, match="expected a duration"):
        parse_when("last week")


def test_a_relative_range_counts_back_from_the_newest_post_when_the_data_is_old(storage):
    fill(storage)
    newest = max(p.published_at for p in storage.scores(limit=10_000))
    now = newest + timedelta(days=30)
    when = resolve_range(storage, "7d", now=now)
    assert when.end > newest >= when.start and when.end - when.start == timedelta(days=7)
    assert "counted back" in when.note
    # Fresh data: the range ends now.
    fresh = resolve_range(storage, "7d", now=newest + timedelta(hours=1))
    assert fresh.end == newest + timedelta(hours=1) and fresh.note == ""
    absolute = resolve_range(storage, "2026-11-01", "2026-11-03", now=now)
    assert (absolute.start, absolute.end) == (datetime(2026, 11, 1, tzinfo=timezone.utc),
                                              datetime(2026, 11, 3, tzinfo=timezone.utc))
    with pytest.raises(ConfigError, match="empty range"):
        resolve_range(storage, "2026-11-03", "2026-11-01", now=now)


def test_report_command_writes_a_self_contained_page(storage, database_url, tmp_path, monkeypatch, capsys):
    fill(storage)
    out = tmp_path / "sub" / "report.html"
    monkeypatch.setenv("FINPULSE_DATABASE_URL", database_url)
    assert main(["report", "--since", "7d", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^3 tickers, 316 posts, 4 alerts", printed, re.MULTILINE), printed
    assert str(out.resolve()) in printed
    page = out.read_text()
    # Nothing is fetched at view time: no external scripts, styles, images or fonts.
    assert not re.search(r"""<(script|img|iframe)[^>]+src=|<link[^>]+href=|@import|url\(\s*['"]?https?:""", page)
    assert "Plotly.newPlot" in page and "plotly.js" in page.lower()
    for text in ("BA", "AAPL", "MSFT", "sentiment_drop".replace("_", " "), "Boeing shares plunge",
                 "https://news.example.com/burst-BA-0", "test macro-F1", "champion"):
        assert text in page, text


def test_report_on_an_empty_database_or_bad_arguments(sqlite_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FINPULSE_DATABASE_URL", sqlite_url)
    assert main(["report", "--out", str(tmp_path / "r.html")]) == 1
    assert "finpulse db upgrade" in capsys.readouterr().err
    Storage(sqlite_url).migrate()
    assert main(["report", "--since", "soon", "--out", str(tmp_path / "r.html")]) == 1
    assert capsys.readouterr().err.startswith("ConfigError: --since/--until: expected a duration")
    assert main(["report", "--out", str(tmp_path / "r.html")]) == 0
    assert "No aggregates in this range" in (tmp_path / "r.html").read_text()


def chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def render_status(dom: str) -> tuple[int, int]:
    match = re.search(r'id="render-status" data-errors="(-?\d+)" data-charts="(-?\d+)"', dom)
    assert match, "the status script did not run"
    return int(match.group(1)), int(match.group(2))


def test_the_error_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(f"<html><head>{ERROR_HOOK}</head><body><script>undefinedFunction();</script>"
                    "<div id='render-status' data-errors='-1' data-charts='-1'></div>"
                    f"{STATUS_SCRIPT}</body></html>")
    result = chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path)
    assert render_status(result.stdout) == (1, 0)
    assert "undefinedFunction" in result.stdout


@pytest.mark.postgres
def test_report_renders_in_chromium_without_errors(postgres_url, tmp_path, monkeypatch):
    storage = Storage(postgres_url)
    storage.migrate()
    try:
        fill(storage)
    finally:
        storage.dispose()
    out = tmp_path / "report.html"
    monkeypatch.setenv("FINPULSE_DATABASE_URL", postgres_url)
    assert main(["report", "--since", "7d", "--out", str(out)]) == 0

    result = chromium("--dump-dom", out.as_uri(), tmp_path=tmp_path)
    errors, charts = render_status(result.stdout)
    assert errors == 0, re.search(r'id="render-status"[^>]*>([^<]*)<', result.stdout).group(1)
    assert charts >= 2, "both charts drew their SVG"
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    result = chromium("--hide-scrollbars", "--window-size=1400,2600", f"--screenshot={shot}", out.as_uri(),
                      tmp_path=tmp_path)
    assert shot.is_file() and shot.stat().st_size > 50_000, result.stderr[-2000:]

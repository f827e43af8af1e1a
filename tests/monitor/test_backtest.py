"""``finpulse alerts backtest``: replays rules over stored history and writes nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from finpulse.cli import main
from finpulse.schemas import ScoredPost
from finpulse.storage import Storage
from tests.records import scored

H = timedelta(hours=1)
M = timedelta(minutes=1)
CALM = (0.3, 0.1, -0.1, 0.2, -0.5, 0.0)
RULES = """\
rules:
  - {name: drop, kind: sentiment_drop, window: 1h}
  - {name: negatives, kind: negative_volume_spike, window: 1h, warmup: 6h}
  - {name: quiet, kind: volume_spike, window: 1h, min_posts: 500}
  - {name: risk, kind: risk_event, phrases: [fraud, recall]}
"""


def history() -> list[ScoredPost]:
    """Two days of calm ACME and BETA, an ACME fraud burst at 30 h, a BETA recall at 40 h."""
    posts = [
        scored(f"{t}-{h}-{i}", h * H + (5 + 9 * i) * M, (t,), s)
        for t in ("ACME", "BETA")
        for h in range(48)
        for i, s in enumerate(CALM)
    ]
    posts += [
        scored(f"ACME-bad-{i}", 30 * H + (2 + 4 * i) * M, ("ACME",), -0.8 - 0.01 * i,
               text=f"ACME fraud probe widens, report {i}")
        for i in range(12)
    ]
    posts.append(scored("BETA-recall", 40 * H + 3 * M, ("BETA",), -0.9,
                        text="BETA announces recall of its flagship product"))
    return posts


@pytest.fixture()
def filled(storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    storage.save_scored(history())
    monkeypatch.setenv("FINPULSE_DATABASE_URL", storage.url)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return rules


def test_backtest_table_per_rule_and_ticker(
    storage: Storage, filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["alerts", "backtest", "--rules", str(filled),
                 "--since", "2024-03-05T00:00:00Z", "--until", "2024-03-06T00:00:00Z"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("backtest 2024-03-05T00:00:00Z .. 2024-03-06T00:00:00Z")
    assert f"{len(history())} posts" in lines[0]
    rows = {tuple(line.split()[:3]) for line in lines[3:]}
    assert ("drop", "ACME", "1") in rows
    assert ("negatives", "ACME", "1") in rows
    assert ("risk", "ACME", "1") in rows
    assert ("risk", "BETA", "1") in rows
    assert ("quiet", "-", "0") in rows
    # Nothing was written to the real database.
    assert storage.alerts() == []


def test_backtest_json_lists_every_alert_and_when(
    storage: Storage, filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["alerts", "backtest", "--rules", str(filled), "--json",
                 "--since", "2024-03-05T00:00:00Z", "--until", "2024-03-06T00:00:00Z",
                 "--warmup", "1d"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["warmup_from"] == "2024-03-04T00:00:00Z"
    assert report["posts"] == len(history())
    assert report["rules"] == ["drop", "negatives", "quiet", "risk"]
    summary = {(s["rule"], s["ticker"]): s for s in report["summary"]}
    assert summary[("risk", "BETA")]["fired_at"] == ["2024-03-05T16:03:00Z"]
    assert summary[("risk", "ACME")]["fired_at"] == ["2024-03-05T06:02:00Z"]
    assert summary[("quiet", None)]["alerts"] == 0
    drop = next(a for a in report["alerts"] if a["rule"] == "drop")
    assert drop["ticker"] == "ACME" and drop["value"] <= drop["threshold"] < 0
    assert drop["post_ids"] and "ACME-bad" in drop["post_ids"][0]
    # A window that holds only the BETA recall: the window rules fire nothing.
    code = main(["alerts", "backtest", "--rules", str(filled), "--json",
                 "--since", "2024-03-05T16:00:00Z", "--until", "2024-03-05T17:00:00Z"])
    narrow = json.loads(capsys.readouterr().out)
    assert [(a["rule"], a["ticker"]) for a in narrow["alerts"]] == [("risk", "BETA")]
    assert storage.alerts() == []


def test_backtest_argument_errors(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["alerts", "backtest", "--since", "yesterday"])
    assert caught.value.code == 2
    assert "expected an ISO 8601 time" in capsys.readouterr().err
    code = main(["alerts", "backtest", "--rules", str(filled),
                 "--since", "2024-03-06T00:00:00Z", "--until", "2024-03-05T00:00:00Z"])
    assert code == 1
    assert capsys.readouterr().err.strip() == "ConfigError: --since must be before --until"
    bad = filled.with_name("bad.yaml")
    bad.write_text("rules:\n  - {name: r, kind: risk_event, phrases: []}\n")
    assert main(["alerts", "backtest", "--rules", str(bad), "--since", "2024-03-05"]) == 1
    assert "rules[0].phrases (rule 'r')" in capsys.readouterr().err

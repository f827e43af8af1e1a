"""``finpulse db``: upgrade, then readable tables and JSON (SQLite + PostgreSQL)."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

import pytest

from finpulse.commands import db
from finpulse.errors import ConfigError
from finpulse.settings import Settings
from monitor.aggregation import aggregate
from tests.records import scored


def finpulse_db(url: str, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="finpulse")
    db.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["db", *argv])
    return args.func(args, Settings(database_url=url))


def test_upgrade_then_query(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="finpulse db upgrade"):
        finpulse_db(database_url, "alerts")
    assert finpulse_db(database_url, "upgrade") == 0
    assert "revision 0006" in capsys.readouterr().out  # the newest migration
    assert finpulse_db(database_url, "upgrade") == 0

    from finpulse.storage import Storage

    storage = Storage(database_url)
    storage.save_scored(
        [
            scored("a", timedelta(minutes=1), ("ACME",), -0.6, text="Acme recalls  every\nwidget"),
            scored("b", timedelta(minutes=70), ("ACME", "BETA"), 0.5),
        ]
    )
    aggregate(storage)
    storage.dispose()
    capsys.readouterr()

    assert finpulse_db(database_url, "scores", "--ticker", "ACME") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "published_at",
        "id",
        "tickers",
        "label",
        "score",
        "conf",
        "model",
        "text",
    ]
    assert "Acme recalls every widget" in table[-1]
    assert table[2].split()[2:4] == ["b", "ACME,BETA"]

    assert (
        finpulse_db(database_url, "aggregates", "--ticker", "acme", "--window", "1h", "--json") == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [(r["start"], r["n"]) for r in rows] == [
        ("2024-03-04T00:00:00Z", 1),
        ("2024-03-04T01:00:00Z", 1),
    ]

    assert (
        finpulse_db(
            database_url, "aggregates", "--ticker", "ACME", "--since", "2024-03-04T00:30", "--json"
        )
        == 0
    )
    assert len(json.loads(capsys.readouterr().out)) == 1

    assert finpulse_db(database_url, "alerts", "--state", "firing") == 0
    assert capsys.readouterr().out.strip() == "(none)"


def test_bad_arguments_exit_2(sqlite_url: str) -> None:
    with pytest.raises(SystemExit) as caught:
        finpulse_db(sqlite_url, "aggregates", "--ticker", "ACME", "--since", "yesterday")
    assert caught.value.code == 2
    with pytest.raises(SystemExit):
        finpulse_db(sqlite_url, "scores", "--limit", "0")

"""`finpulse rescore`, `finpulse query ... --model`, `finpulse query shadow` and
`finpulse registry shadow`, in this process, on SQLite and PostgreSQL with a real tiny model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from finpulse.cli import main
from finpulse.services.monitor import MonitorService
from finpulse.storage import Storage
from finpulse.storage import tables as t
from finpulse.storage.versions import version_series, versions_of_scores
from models.artifact import read_manifest
from models.inference import SentimentEngine
from monitor.rules import RuleSet
from tests.models.tiny import build_tiny_base, make_rows, write_csv
from tests.services.test_model_reload import train_tiny
from tests.storage.test_versions import RULES, disagreeing, history, live_state

SINCE, UNTIL = "2024-03-05T00:00:00Z", "2024-03-05T12:00:00Z"  # hours 24 .. 35 of history()


class Run:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rescore")
    base = build_tiny_base(root / "base")
    return train_tiny(root / "model", base, write_csv(root / "data.csv", make_rows(200, seed=3)), seed=4)


@pytest.fixture()
def finpulse(storage: Storage, monkeypatch, capsys):
    """Run the CLI in this process on ``storage``, with the tiny model on CPU in fp32."""
    monkeypatch.setenv("FINPULSE_DATABASE_URL", storage.url)
    for name, value in (("DEVICE", "cpu"), ("DTYPE", "float32"), ("BACKEND", "torch")):
        monkeypatch.setenv(f"FINPULSE_MODEL__{name}", value)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def run(*args: str) -> Run:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse refusing an argument
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Run(code, out.out, out.err)

    yield run
    root.handlers[:], root.level = handlers, level


def test_rescore_keeps_both_versions_and_the_model_views_read_the_new_one(
    storage: Storage, finpulse, artifact: Path, tmp_path: Path
) -> None:
    posts = history()
    storage.save_scored(posts)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    rules = RuleSet.load(rules_file)
    assert MonitorService(storage, rules).run_once().fired
    before = live_state(storage)
    version = read_manifest(artifact)["version"]
    assert finpulse("registry", "add", str(artifact)).returncode == 0

    done = finpulse("rescore", "--model", version, "--since", SINCE, "--until", UNTIL,
                    "--batch-size", "20", "--json")
    assert done.returncode == 0, done.stderr
    inside = [p for p in posts if SINCE <= p.published_at.strftime("%Y-%m-%dT%H:%M:%SZ") < UNTIL]
    totals = json.loads(done.stdout)
    assert totals["model"] == version
    assert totals["scored"] == totals["stored"] == len(inside)
    assert totals["batches"] == -(-len(inside) // 20)
    progress = [line for line in done.stderr.splitlines() if line.startswith("rescore ")]
    assert len(progress) == totals["batches"]
    assert progress[-1].startswith(f"rescore {version}: {len(inside)}/{len(inside)} posts (100%)")
    assert versions_of_scores(storage) == {"v1": {"live": len(posts)},
                                           version: {"rescore": len(inside)}}

    # The new scores are the model's own predictions of those posts.
    engine = SentimentEngine.load(artifact, device="cpu", dtype="float32")
    predicted = dict(zip([p.id for p in inside], engine.predict([p.text for p in inside]), strict=True))
    with storage.begin() as conn:
        rows = conn.execute(sa.select(t.scores.c.post_id, t.scores.c.label, t.scores.c.score)
                            .where(t.scores.c.model_version == version)).all()
    assert {r.post_id: r.label for r in rows} == {i: p.label for i, p in predicted.items()}
    assert all(r.score == pytest.approx(predicted[r.post_id].score) for r in rows)

    # Again: nothing to do, nothing duplicated. Live aggregates and alerts: as they were.
    again = finpulse("rescore", "--model", version, "--since", SINCE, "--until", UNTIL)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"rescored 0 posts with {version} (0 new scores")
    assert storage.count_scores() == len(posts) + len(inside)
    assert live_state(storage) == before
    # The monitor finds no new work in them. (Its alerts are left out of this comparison:
    # a risk-event pass re-reads the last scores it saw and counts them again, rescored or not.)
    assert MonitorService(storage, rules).run_once().fired == []
    after = live_state(storage)
    assert {k: v for k, v in after.items() if k not in ("alerts", "evidence")} == \
           {k: v for k, v in before.items() if k not in ("alerts", "evidence")}

    # The views of that version.
    series = json.loads(finpulse("query", "sentiment", "--ticker", "ACME", "--window", "1h",
                                 "--model", version, "--limit", "100", "--json").stdout)
    expected = version_series(storage, "ACME", "1h", version, limit=100).items
    assert [p["n"] for p in series] == [p["n"] for p in expected] and len(series) == 12
    assert [p["mean_score"] for p in series] == pytest.approx([p["mean_score"] for p in expected])
    assert sum(p["n"] for p in series) == sum("ACME" in p.tickers for p in inside)
    live_series = json.loads(finpulse("query", "sentiment", "--ticker", "ACME", "--window", "1h",
                                      "--limit", "100", "--json").stdout)
    assert len(live_series) == 48
    listed = json.loads(finpulse("query", "posts", "--model", version, "--limit", "500", "--json").stdout)
    assert {p["id"] for p in listed} == {p.id for p in inside}
    assert {(p["model_version"], p["role"]) for p in listed} == {(version, "rescore")}
    table = finpulse("query", "posts", "--model", version, "--limit", "3").stdout
    assert "rescore" in table and version in table


def test_registry_shadow_and_the_shadow_query(storage: Storage, finpulse, artifact: Path) -> None:
    version = read_manifest(artifact)["version"]
    assert finpulse("registry", "add", str(artifact)).returncode == 0
    assert finpulse("registry", "shadow", version).returncode == 0
    listed = json.loads(finpulse("registry", "list", "--json").stdout)
    assert [v["shadow"] for v in listed] == [True]
    assert f"challenger+shadow {version}" in finpulse("registry", "list").stdout
    off = finpulse("registry", "shadow", "--off")
    assert off.returncode == 0 and f"was: {version}" in off.stdout
    assert "no shadow scores" in finpulse("query", "shadow").stdout

    posts = [p for p in history() if p.published_at.hour < 2 and p.published_at.day == 4]
    storage.save_scored(posts, shadow=disagreeing(posts, version))
    # --since/--until bound when the shadow scores were stored (now), not when posts were published.
    assert len(json.loads(finpulse("query", "shadow", "--since", "1d", "--json").stdout)) == 1
    assert json.loads(finpulse("query", "shadow", "--until", "1d", "--json").stdout) == []
    (row,) = json.loads(finpulse("query", "shadow", "--json").stdout)
    assert (row["version"], row["source"], row["n"], row["agreement"]) == (version, "news", len(posts), 0.0)
    table = finpulse("query", "shadow", "--model", version).stdout
    assert "0.0%" in table and f"{len(posts)}" in table
    csv_out = finpulse("query", "shadow", "--csv").stdout.splitlines()
    assert csv_out[0].startswith("version,source,n,agreement,live_versions,live_confidence")
    assert len(csv_out) == 2


@pytest.mark.parametrize(("args", "message"), [
    (["rescore", "--model", "nope", "--since", "7d"], "ConfigError: unknown model version 'nope'"),
    (["rescore", "--model", "x", "--since", "1d", "--until", "2d"], "ConfigError: --since must be before --until"),
    (["rescore", "--model", "x", "--since", "yesterday"], "argument --since"),
    (["rescore", "--model", "x", "--since", "7d", "--batch-size", "0"], "argument --batch-size"),
    (["rescore", "--since", "7d"], "the following arguments are required: --model"),
    (["query", "sentiment", "--ticker", "ACME", "--model", "nope"], "ConfigError: model: unknown model version 'nope'"),
    (["query", "posts", "--model", "nope"], "ConfigError: model: unknown model version 'nope'"),
    (["query", "shadow", "--model", "nope"], "ConfigError: model: unknown model version 'nope'"),
    (["registry", "shadow"], "one of the arguments version --off is required"),
    (["registry", "shadow", "nope"], "ConfigError: unknown model version 'nope'"),
])
def test_bad_arguments_get_one_line(storage: Storage, finpulse, args: list[str], message: str) -> None:
    result = finpulse(*args)
    assert result.returncode in (1, 2)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_the_champion_cannot_shadow_itself(storage: Storage, finpulse, artifact: Path) -> None:
    version = read_manifest(artifact)["version"]
    assert finpulse("registry", "add", str(artifact), "--promote").returncode == 0
    result = finpulse("registry", "shadow", version)
    assert result.returncode == 1
    assert result.stderr.strip() == f"ConfigError: {version} is the champion: it already scores the stream live"

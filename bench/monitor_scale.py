"""Does the monitor's cost follow new work, not history? One pass over 1,000 new scores,
with an empty history and with 1,000,000 stored scores, on PostgreSQL.

    PYTHONPATH=. python bench/monitor_scale.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

The URL names a server and a database to connect to for administration: the benchmark
creates two scratch databases next to it (dropped at the end unless ``--keep``). History is
bulk-loaded with ``generate_series`` (posts, post_tickers, scores), aggregated in one batch
pass and judged by one monitor pass, so the per-(rule, ticker) cursors are in place as in a
monitor that has been running. Each timed pass then runs in a fresh child process (so its
RSS is the monitor's own, not the loader's): the scorer-side ``save_scored`` of 1,000 new
scores (with partition progress, as the scorer writes them), then one
``MonitorService.run_once``. Three rounds per case; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from finpulse.schemas import ScoredPost
from finpulse.storage import Storage

TICKERS = 50
HISTORY_DAYS = 30
HISTORY_END = datetime(2026, 10, 1, tzinfo=timezone.utc)
NEW_PER_ROUND = 1000


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def new_scores(round_no: int) -> list[ScoredPost]:
    """1,000 new posts over 10 minutes of event time after the history, across the tickers."""
    start = HISTORY_END + timedelta(minutes=10 * round_no)
    out = []
    for i in range(NEW_PER_ROUND):
        score = ((i * 37) % 200 - 100) / 100
        label = "negative" if score < -0.2 else "positive" if score > 0.2 else "neutral"
        neg, pos = max(-score, 0.0), max(score, 0.0)
        published = start + timedelta(seconds=i * 600 / NEW_PER_ROUND)
        out.append(ScoredPost(
            id=f"new-{round_no}-{i}", source="news", text=f"new post {i}",
            published_at=published, tickers=(f"T{i % TICKERS}",), label=label, score=score,
            probabilities={"negative": neg, "neutral": 1 - neg - pos, "positive": pos},
            confidence=0.8, model_version="bench-v1", scored_at=published + timedelta(seconds=1),
        ))
    return out


def child(url: str, round_no: int) -> None:
    """One timed monitor pass after storing one round of new scores; prints JSON."""
    from finpulse.services.monitor import MonitorService
    from monitor.rules import RuleSet

    storage = Storage(url)
    posts = new_scores(round_no)
    storage.save_scored(posts, progress={("finpulse.news", 0): posts[-1].published_at})
    service = MonitorService(storage, RuleSet.load())
    started = time.perf_counter()
    result = service.run_once()
    took = time.perf_counter() - started
    print(json.dumps({"pass_s": took, "aggregates": result.aggregates, "rss_mb": _rss_mb()}))
    storage.dispose()


def load_history(storage: Storage, n: int) -> float:
    """Bulk-load ``n`` scored posts over HISTORY_DAYS before HISTORY_END; returns seconds."""
    started = time.perf_counter()
    step = HISTORY_DAYS * 86400 / n
    params = {"n": n, "start": HISTORY_END - timedelta(days=HISTORY_DAYS), "step": step,
              "tickers": TICKERS}
    statements = [
        """INSERT INTO posts (id, source, text, published_at, tickers, stored_at)
           SELECT 'h' || g, 'news', 'history post ' || g,
                  CAST(:start AS timestamptz) + g * :step * interval '1 second',
                  json_build_array('T' || (g % :tickers)), now()
           FROM generate_series(1, :n) AS g""",
        """INSERT INTO post_tickers (post_id, ticker, published_at)
           SELECT id, tickers->>0, published_at FROM posts""",
        """INSERT INTO scores (post_id, model_version, label, score, p_negative, p_neutral,
                               p_positive, confidence, scored_at, stored_at)
           SELECT id, 'bench-v1',
                  CASE WHEN s < -0.2 THEN 'negative' WHEN s > 0.2 THEN 'positive'
                       ELSE 'neutral' END,
                  s, GREATEST(-s, 0), 1 - abs(s), GREATEST(s, 0), 0.8, published_at, now()
           FROM (SELECT id, published_at, sin(hashtext(id))::float8 * 0.6 AS s FROM posts) x""",
    ]
    with storage.begin() as conn:
        for sql in statements:
            conn.execute(sa.text(sql), params)
    with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    return time.perf_counter() - started


def prepare(url: str, history: int) -> dict[str, float]:
    from finpulse.services.monitor import WINDOWS, MonitorService
    from monitor.aggregation import aggregate
    from monitor.rules import RuleSet

    storage = Storage(url)
    storage.migrate()
    out: dict[str, float] = {}
    if history:
        out["load_s"] = load_history(storage, history)
        started = time.perf_counter()
        aggregate(storage, windows=WINDOWS)
        # The monitor judges the whole history once, as a running monitor would have.
        with storage.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO partition_progress VALUES ('finpulse.news', 0, :at, now())"),
                {"at": HISTORY_END})
        MonitorService(storage, RuleSet.load()).run_once()
        out["first_judgement_s"] = time.perf_counter() - started
    storage.dispose()
    return out


def run_case(url: str, rounds: int) -> list[dict[str, float]]:
    results = []
    for round_no in range(rounds):
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(round_no), "--database-url", url],
            capture_output=True, text=True, check=True, cwd=REPO,
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.database_url, args.child)
        return

    admin_url = Storage(args.database_url).url
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    tag = uuid.uuid4().hex[:8]
    names = {"empty": f"finpulse_bench_empty_{tag}", "history": f"finpulse_bench_hist_{tag}"}
    base = admin_url.rsplit("/", 1)[0]
    report: dict[str, dict] = {}
    try:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        for case, history in (("empty", 0), ("history", args.history)):
            url = f"{base}/{names[case]}"
            setup = prepare(url, history)
            rounds = run_case(url, args.rounds)
            report[case] = {
                "stored_scores_before": history,
                "setup": setup,
                "rounds": rounds,
                "median_pass_s": statistics.median(r["pass_s"] for r in rounds),
                "max_rss_mb": max(r["rss_mb"] for r in rounds),
            }
    finally:
        if not args.keep:
            with admin.connect() as conn:
                for name in names.values():
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    empty, hist = report["empty"], report["history"]
    print(json.dumps(report, indent=2))
    print(f"one pass over {NEW_PER_ROUND:,} new scores: empty history "
          f"{empty['median_pass_s']:.3f} s, with {hist['stored_scores_before']:,} stored "
          f"{hist['median_pass_s']:.3f} s, ratio {hist['median_pass_s'] / empty['median_pass_s']:.2f}x "
          f"(medians of {args.rounds})")
    print(f"monitor RSS after the pass: empty history {empty['max_rss_mb']:.0f} MB, "
          f"with history {hist['max_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()

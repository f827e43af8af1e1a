"""Helpers of the fault-injection tests: scorer processes, a private PostgreSQL, topic reads."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from finpulse.schemas import Post
from finpulse.settings import KafkaSettings
from finpulse.storage import Storage
from tests.e2e.posts import CALM, T0
from tests.ingest.kafka_io import read_topic


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Wait until ``predicate()``; returns the seconds it took; fails after ``timeout_s``."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def make_posts(n: int, prefix: str = "p", ticker: str = "AAPL") -> list[Post]:
    return [
        Post(id=f"{prefix}-{i}", source="news" if i % 2 else "social",
             text=CALM[i % len(CALM)].format(name=f"Company {i}"),
             published_at=T0 + timedelta(seconds=i), tickers=(ticker,))
        for i in range(n)
    ]


def scorer_env(kafka: KafkaSettings, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINPULSE_") or k == "FINPULSE_MODEL__PATH"}
    env.update({
        "FINPULSE_DATABASE_URL": database_url,
        "FINPULSE_METRICS__ENABLED": "false",
        "FINPULSE_SCORER__MAX_BATCH_SIZE": "16",
        "FINPULSE_SCORER__MAX_WAIT_MS": "50",
        "FINPULSE_SCORER__RETRY_CAP_S": "2",
        **{f"FINPULSE_KAFKA__{k.upper()}": str(v)
           for k, v in kafka.model_dump(exclude_none=True).items()},
        **extra,
    })
    return env


def start_scorer(env: dict[str, str], log: Any, crash_at: str = "none", nth: int = 1) -> subprocess.Popen:
    """A scorer process (``tests.e2e.scorer_harness``) that SIGKILLs itself at ``crash_at``."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.scorer_harness", crash_at, str(nth), "--reload-interval", "3600"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def stored_ids(storage: Storage) -> Counter[str]:
    """Post ids with the number of scores each has (one model version: 1 each)."""
    return Counter(p.id for p in storage.scores(limit=1_000_000))


def dlq_reasons(kafka: KafkaSettings, count: int) -> Counter[str]:
    return Counter(
        dict(r.headers)["reason"].decode() for r in read_topic(kafka, kafka.dlq_topic, count)
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in a temp dir, run as the ``postgres`` OS user.

    The machine's own server is never touched: this one has its own data directory and
    port, and can be stopped and started to simulate an outage.
    """

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql")
        self.bin = bins[-1]
        # Not under pytest's tmp_path: the postgres user cannot traverse root's 0700 dirs.
        self.root = Path(tempfile.mkdtemp(prefix="finpulse-pg-"))
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, "postgres")
        self.dir = self.root / "pgdata"
        self.port = _free_port()
        self._as_postgres(["initdb", "-D", str(self.dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"])

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, argv: list[str]) -> None:
        command = ["runuser", "-u", "postgres", "--", str(self.bin / argv[0]), *argv[1:]]
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')[-1000:]}")

    def start(self) -> None:
        self._as_postgres([
            "pg_ctl", "-D", str(self.dir), "-w", "-l", str(self.root / "pg.log"),
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ])

    def stop(self) -> None:
        self._as_postgres(["pg_ctl", "-D", str(self.dir), "-w", "-m", "immediate", "stop"])

    def destroy(self) -> None:
        """Stop the cluster if it runs and delete its files."""
        if (self.dir / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def report(case: str, sent: int, stored: Counter[str], dlq: int, recover_s: float | None) -> None:
    """Print one row of the fault table (scripts/fault_table.py collects them from ``pytest -s``).

    ``stored`` counts the scores per post id of the posts this row is about.
    """
    duplicated = sum(n - 1 for n in stored.values() if n > 1)
    recover = "-" if recover_s is None else f"{recover_s:.1f}"
    print(f"\nFAULTROW\t{case}\t{sent}\t{len(stored)}\t{duplicated}\t{dlq}\t{recover}", flush=True)

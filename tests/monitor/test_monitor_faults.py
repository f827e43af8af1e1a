"""``finpulse monitor`` under faults: a 30 s outage of a private PostgreSQL cluster (never the
machine's own) does not stop it and loses or duplicates nothing; a bad rules file is fatal."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from finpulse.storage import Storage
from finpulse.storage import tables as t
from monitor.aggregation import aggregate
from monitor.judging import evaluate
from tests.monitor.test_alerting import BOTH, RULES, burst, calm

OUTAGE_S = 30.0
REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINPULSE_")}
    env["PYTHONPATH"] = str(REPO)
    env["FINPULSE_METRICS__PORT"] = "0"
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """A throw-away PostgreSQL cluster of our own, run as the ``postgres`` OS user."""

    def __init__(self) -> None:
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bindirs or shutil.which("runuser") is None or os.geteuid() != 0:
            pytest.skip("needs PostgreSQL server binaries and root (to run as postgres)")
        self.bin = Path(bindirs[-1])
        self.root = Path(tempfile.mkdtemp(prefix="finpulse-pg-"))
        self.root.chmod(0o755)
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c full_page_writes=off")
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                 str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture()
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.postgres
@pytest.mark.timeout(420)
def test_monitor_rides_out_a_database_outage(private_postgres: PrivatePostgres, tmp_path) -> None:
    storage = Storage(private_postgres.url)
    storage.migrate()
    before = calm("ACME", range(29)) + calm("BETA", range(29))
    after = calm("ACME", range(29, 40)) + calm("BETA", range(29, 40))
    after = [p for p in after if "ACME-30-" not in p.id] + burst("ACME", 30)
    storage.save_scored(before)
    # The window rules only (RULES), as the batch run below judges them.
    rules_file = tmp_path / "rules.yaml"
    bundled = yaml.safe_load((REPO / "monitor" / "rules.yaml").read_text())
    names = {rule.name for rule in RULES.rules}
    bundled["rules"] = [rule for rule in bundled["rules"] if rule["name"] in names]
    rules_file.write_text(yaml.safe_dump(bundled))

    proc = subprocess.Popen(
        [sys.executable, "-m", "finpulse", "monitor", "--interval", "0.3"],
        env=_env(FINPULSE_DATABASE_URL=private_postgres.url,
                 FINPULSE_ALERTS__RULES_FILE=str(rules_file)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        def cursors() -> int:
            with storage.begin() as conn:
                return len(conn.execute(sa.select(t.rule_cursors)).all())

        _wait(lambda: cursors() == len(RULES.enabled), 180, "the first monitor pass")
        storage.dispose()
        private_postgres.stop()
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.5)
        private_postgres.start()
        storage.save_scored(after)
        _wait(lambda: {a.rule for a in storage.alerts()} == BOTH, 90, "the alerts after the outage")
        _wait(lambda: all(a.state == "resolved" for a in storage.alerts()), 30, "resolution")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr[-2000:]
        assert "retrying" in stderr  # it did see the outage
        live = {(a.id, a.state, a.fired_at, a.resolved_at) for a in storage.alerts()}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        storage.dispose()

    batch = Storage(f"sqlite:///{tmp_path / 'batch.db'}")
    batch.migrate()
    batch.save_scored(before + after)
    aggregate(batch)
    evaluate(batch, RULES)
    assert live == {(a.id, a.state, a.fired_at, a.resolved_at) for a in batch.alerts()}
    batch.dispose()


def test_a_bad_rules_file_is_fatal_with_one_line(tmp_path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: drop, kind: sentiment_drop, z_threshold: -1}\n")
    result = subprocess.run(
        [sys.executable, "-m", "finpulse", "monitor"],
        env=_env(FINPULSE_DATABASE_URL=f"sqlite:///{tmp_path / 'm.db'}",
                 FINPULSE_ALERTS__RULES_FILE=str(rules)),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ConfigError: ") and "z_threshold" in lines[0]

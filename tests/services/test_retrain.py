"""The retraining job end to end on a real database with a tiny model and injected feedback.

The base data are the synthetic keyword texts of ``tests/models/tiny.py``; the champion is
trained on them. Analysts then label a new pattern the champion never saw: texts with
out-of-vocabulary words ("guidance slashed ...") are negative. A challenger that learns
it beats the champion on the held-back feedback and is promoted; one trained on shuffled
labels is rejected with the reason recorded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from finpulse.cli import main
from finpulse.errors import ConfigError, LeaseError, LeaseHeld
from finpulse.metrics import Metrics
from finpulse.services.retrain import RetrainService
from finpulse.services.scorer import ModelReloader
from finpulse.settings import Settings
from finpulse.storage import Storage
from finpulse.storage import tables as t
from finpulse.storage.registry import ModelRegistry
from models.artifact import read_manifest
from models.config import TrainConfig
from models.continual import read_gold_keys, shuffle_labels
from models.data import read_split
from tests.models.tiny import build_tiny_base, make_rows, write_csv

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(timezone.utc)
# Words outside the tiny vocabulary: the tokenizer maps them to [UNK], which the base data
# never contain, so the champion has no reason to call these texts negative.
NEW_PATTERN = ["guidance slashed", "writedown looms", "covenant breached", "auditor resigned"]


def tiny_config(base: Path, data: Path, **overrides) -> TrainConfig:
    # Full fine-tuning: the tiny random encoder learns the keyword rule in a few epochs.
    values = {"data": [str(data)], "base": str(base), "method": "full", "epochs": 8,
              "lr": 3e-3, "head_lr": 1e-2, "batch_size": 16, "max_length": 32,
              "class_weighting": "balanced", "patience": 6, "progress": False,
              "autocast": "off", "seed": 13}
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine two threads mostly wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def champion_dir(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(artifact, tiny base, base data): the champion trained on the synthetic base data."""
    from models.train import train

    root = tmp_path_factory.mktemp("retrain")
    base = build_tiny_base(root / "base")
    data = write_csv(root / "base.csv", make_rows(600, seed=1))
    train(tiny_config(base, data), root / "champion", device="cpu")
    return root / "champion", base, data


def add_feedback(storage: Storage, table: sa.Table, n: int) -> list[str]:
    """Store ``n`` posts of the new pattern with analysts' "negative" labels; returns the texts."""
    texts = []
    with storage.begin() as conn:
        for i in range(n):
            text = f"{NEW_PATTERN[i % 4]} company report w{i % 30}"
            texts.append(text)
            created = NOW - timedelta(hours=n - i)
            conn.execute(sa.insert(t.posts).values(
                id=f"fb-{i}", source="news", text=text, published_at=created, tickers=[],
                stored_at=created))
            conn.execute(sa.insert(table).values(
                post_id=f"fb-{i}", label="negative", author="ana", comment=None,
                created_at=created))
    return texts


def settings_for(database_url: str, champion: Path, tmp_path: Path, **gate) -> Settings:
    retrain = {"output_dir": str(tmp_path / "challengers"),
               "gold_split": str(champion / "split.csv"),
               # Gold has ~60 texts: one changed prediction moves a class's F1 by ~0.05.
               "gold_tolerance": 0.1, "max_class_drop": 0.15, **gate}
    return Settings.load(database_url=database_url, retrain=retrain,
                         model={"device": "cpu", "dtype": "float32"})


def promote(registry: ModelRegistry, directory: Path) -> str:
    manifest = read_manifest(directory)
    registry.register(manifest["version"], base=manifest["base"], method=manifest["method"],
                      metrics=manifest["metrics"], artifact_path=str(directory),
                      status="champion")
    return manifest["version"]


def test_better_challenger_is_promoted_scorer_follows_and_rollback_restores(
    champion_dir, storage, tmp_path
):
    champion, base, data = champion_dir
    registry = ModelRegistry(storage)
    first = promote(registry, champion)
    settings = settings_for(storage.url, champion, tmp_path)
    reloader = ModelReloader(settings, registry, interval_s=3600)
    engine = reloader.initial()
    assert engine.version == first
    add_feedback(storage, t.feedback, 40)
    metrics = Metrics(CollectorRegistry())

    result = RetrainService(settings, storage, metrics, device="cpu").run_once(
        tiny_config(base, data, epochs=3))

    assert result["decision"] == "promoted", result["reason"]
    assert result["started_from"] == "champion"
    counts = result["data"]
    assert counts["feedback_held_back"] == 8 and counts["feedback_validation"] == 3
    assert counts["feedback"] == 29
    assert counts["replay"] > 0 and counts["base"] == 0
    fb = result["feedback"]
    assert fb["challenger"]["macro_f1"] > fb["champion"]["macro_f1"]
    assert fb["challenger"]["per_class"]["negative"]["recall"] > 0.5
    assert set(result["gold"]) == {"champion", "challenger"}
    assert set(result["gold"]["champion"]["per_class"]) == {"negative", "neutral", "positive"}
    # The gold set was neither trained nor early-stopped on: the challenger's own split says so.
    gold_keys = read_gold_keys(champion / "split.csv")
    split = read_split(Path(result["artifact"]) / "split.csv")
    assert {k for k, row in split.items() if row["split"] in ("train", "validation")} & gold_keys == set()
    assert {k for k, row in split.items() if row["split"] == "test"} == gold_keys
    assert result["gold"]["champion"]["n"] == len(gold_keys)

    # The registry has a new champion and the running scorer's reloader switches to it.
    assert registry.champion().version == result["challenger"] != first
    swapped = reloader.maybe_reload(engine, force=True)
    assert swapped.version == result["challenger"]
    assert swapped.predict(["guidance slashed company report"])[0].label == "negative"

    runs = storage.retrain_runs()
    assert [(r.decision, r.champion, r.challenger) for r in runs] == [
        ("promoted", first, result["challenger"])]
    assert runs[0].counts == counts and runs[0].gold == result["gold"]
    assert runs[0].finished_at >= runs[0].started_at
    assert metrics.registry.get_sample_value(
        "finpulse_retrain_runs_total", {"decision": "promoted"}) == 1.0
    assert metrics.registry.get_sample_value(
        "finpulse_retrain_gold_macro_f1", {"model": "challenger"}) == result["gold"]["challenger"]["macro_f1"]
    assert metrics.registry.get_sample_value("finpulse_retrain_last_run_timestamp_seconds") > 0

    # Rollback re-instates the old champion, and the scorer follows it back.
    assert registry.rollback().version == first
    assert reloader.maybe_reload(swapped, force=True).version == first


def test_broken_challenger_is_rejected_with_the_reason_recorded(champion_dir, sqlite_url, tmp_path):
    champion, base, data = champion_dir
    storage = Storage(sqlite_url)
    storage.migrate()
    try:
        registry = ModelRegistry(storage)
        first = promote(registry, champion)
        add_feedback(storage, t.feedback, 40)
        settings = settings_for(sqlite_url, champion, tmp_path)
        metrics = Metrics(CollectorRegistry())
        service = RetrainService(settings, storage, metrics, device="cpu")

        result = service.run_once(tiny_config(base, data, epochs=3, lr=1e-2),
                                  transform=lambda d: shuffle_labels(d, seed=7))

        assert result["decision"] == "rejected"
        assert registry.champion().version == first
        assert registry.get(result["challenger"]).status == "challenger"
        run = storage.retrain_runs()[0]
        assert run.decision == "rejected" and run.reason == result["reason"]
        assert "fell by" in run.reason or "below the champion's" in run.reason
        assert metrics.registry.get_sample_value(
            "finpulse_retrain_runs_total", {"decision": "rejected"}) == 1.0
    finally:
        storage.dispose()


def test_a_distilled_champion_retrains_as_the_same_student_without_its_teachers(
    champion_dir, sqlite_url, tmp_path
):
    """The champion's own configuration names a teacher that is gone: the run neither needs
    it nor distils from it (it never saw the analysts' labels), and keeps the student's depth."""
    import shutil

    from models.train import train

    champion, base, data = champion_dir
    teacher = tmp_path / "teacher"
    shutil.copytree(champion, teacher)
    student = tmp_path / "student"
    train(tiny_config(base, data, epochs=2, student_layers=[1], teacher=[str(teacher)]),
          student, device="cpu")
    shutil.rmtree(teacher)
    storage = Storage(sqlite_url)
    storage.migrate()
    try:
        registry = ModelRegistry(storage)
        promote(registry, student)
        add_feedback(storage, t.feedback, 40)
        service = RetrainService(settings_for(sqlite_url, student, tmp_path), storage,
                                 Metrics(CollectorRegistry()), device="cpu")

        result = service.run_once()

        manifest = read_manifest(result["artifact"])
        assert result["started_from"] == "champion"
        assert manifest["student_layers"] == [1]
        assert manifest["base_fingerprint"]["num_hidden_layers"] == 1
        assert "teachers" not in manifest
        assert storage.retrain_runs()[0].decision in ("promoted", "rejected")
    finally:
        storage.dispose()


def test_the_gate_judges_the_int8_graph_the_scorer_then_loads_from_the_cache(
    champion_dir, storage, tmp_path
):
    """With the default engine settings on a CPU, the gate scores both models with the int8
    graph, and the challenger's graph it built is the one a scorer loads once promoted."""
    pytest.importorskip("onnxruntime")
    champion, base, data = champion_dir
    registry = ModelRegistry(storage)
    promote(registry, champion)
    add_feedback(storage, t.feedback, 40)
    cache = tmp_path / "graphs"
    settings = Settings.load(
        database_url=storage.url,
        retrain={"output_dir": str(tmp_path / "challengers"),
                 "gold_split": str(champion / "split.csv")},
        model={"device": "cpu", "cache_dir": str(cache)})
    service = RetrainService(settings, storage, Metrics(CollectorRegistry()), device="cpu")
    challenger = service.run_once(tiny_config(base, data, epochs=1))["challenger"]

    graphs = list(cache.glob(f"{challenger}-int8-*.onnx"))
    assert len(graphs) == 1  # the gate built it (smoothed or not, as its manifest says)
    built = graphs[0]
    before = built.stat().st_mtime_ns
    if registry.champion().version != challenger:  # rejected: promote it by hand
        registry.promote(challenger)
    engine = ModelReloader(settings, registry).initial()
    assert (engine.version, engine.backend, engine.info["dtype"]) == (challenger, "onnx", "int8")
    assert built.stat().st_mtime_ns == before  # loaded from the cache, not rebuilt


def test_a_failed_run_is_recorded_and_promotes_nothing(champion_dir, sqlite_url, tmp_path):
    champion, base, data = champion_dir
    storage = Storage(sqlite_url)
    storage.migrate()
    try:
        registry = ModelRegistry(storage)
        first = promote(registry, champion)
        service = RetrainService(settings_for(sqlite_url, champion, tmp_path), storage,
                                 device="cpu")
        with pytest.raises(Exception, match="data file not found"):
            service.run_once(tiny_config(base, tmp_path / "missing.csv"))
        run = storage.retrain_runs()[0]
        assert run.decision == "failed" and "DataError: data file not found" in run.reason
        assert registry.champion().version == first

        # SIGTERM while a scheduled run trains: the loop ends without an error, the run is
        # recorded as failed, and no challenger is registered.
        stop, errors = threading.Event(), []

        def schedule() -> None:
            try:
                service.run(stop, every_s=3600, train_config=tiny_config(base, data, epochs=500))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        worker = threading.Thread(target=schedule)
        worker.start()
        deadline = time.monotonic() + 60
        while len(storage.retrain_runs()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        worker.join(timeout=60)
        assert not worker.is_alive() and errors == []
        runs = storage.retrain_runs()
        assert [(r.decision, r.trigger) for r in runs] == [("failed", "schedule"),
                                                           ("failed", "manual")]
        assert runs[0].reason.startswith("TrainingStopped: training stopped in epoch")
        assert [v.version for v in registry.list()] == [first]
    finally:
        storage.dispose()


def test_cli_runs_on_a_schedule_prints_json_lists_runs_and_stops_on_sigterm(
    champion_dir, sqlite_url, tmp_path, monkeypatch, capsys
):
    champion, base, data = champion_dir
    storage = Storage(sqlite_url)
    storage.migrate()
    promote(ModelRegistry(storage), champion)
    add_feedback(storage, t.feedback, 20)
    storage.dispose()
    config = tmp_path / "small.yaml"
    config.write_text(json.dumps(tiny_config(base, data, epochs=1).to_dict()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FINPULSE_DATABASE_URL": sqlite_url,
           "FINPULSE_RETRAIN__GOLD_SPLIT": str(champion / "split.csv"),
           "FINPULSE_RETRAIN__OUTPUT_DIR": str(tmp_path / "out"),
           "FINPULSE_METRICS__PORT": "0", "FINPULSE_MODEL__DTYPE": "float32"}
    cli = [sys.executable, "-m", "finpulse"]
    log = (tmp_path / "retrain.log").open("w")
    proc = subprocess.Popen([*cli, "retrain", "--every", "1h", "--json", "--train-config",
                             str(config), "--device", "cpu", "--threads", "1"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the first run has printed its result
        assert line, (tmp_path / "retrain.log").read_text()
        result = json.loads(line)
        assert {"champion", "challenger", "data", "gold", "feedback", "decision", "reason",
                "seconds"} <= set(result)
        assert result["decision"] in ("promoted", "rejected")
        assert result["data"]["feedback_held_back"] == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "retraining schedule stopped" in (tmp_path / "retrain.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        log.close()
    # Listing and a bad option, in process (the same main() the subprocess ran).
    monkeypatch.setenv("FINPULSE_DATABASE_URL", sqlite_url)
    capsys.readouterr()
    assert main(["retrain", "runs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["decision"], r["challenger"], r["trigger"]) for r in runs] == [
        (result["decision"], result["challenger"], "schedule")]
    assert runs[0]["gold"]["challenger"]["macro_f1"] == result["gold"]["challenger"]["macro_f1"]
    assert main(["retrain", "runs"]) == 0
    assert result["challenger"] in capsys.readouterr().out
    assert main(["retrain", "--train-config", str(tmp_path / "nope.yaml")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"ConfigError: training config not found: {tmp_path / 'nope.yaml'}")
    with pytest.raises(SystemExit) as exit_info:
        main(["retrain", "--every", "soon"])
    assert exit_info.value.code == 2


def test_no_promotion_over_a_champion_promoted_during_the_run(champion_dir, sqlite_url, tmp_path):
    champion, base, data = champion_dir
    storage = Storage(sqlite_url)
    storage.migrate()
    try:
        registry = ModelRegistry(storage)
        promote(registry, champion)
        registry.register("promoted-by-hand", base=str(base), method="full", metrics={},
                          artifact_path=str(champion))
        add_feedback(storage, t.feedback, 40)
        service = RetrainService(settings_for(sqlite_url, champion, tmp_path), storage,
                                 device="cpu")

        def promote_meanwhile(data):
            registry.promote("promoted-by-hand")
            return data

        result = service.run_once(tiny_config(base, data, epochs=3), transform=promote_meanwhile)
        assert result["decision"] == "rejected"
        assert result["reason"].startswith("the champion changed during the run")
        assert registry.champion().version == "promoted-by-hand"
    finally:
        storage.dispose()


def add_health_alert(storage: Storage, alert_id: str, rule: str = "low_confidence") -> None:
    """A firing model-health alert, stored as the monitor stores one (rule name, source)."""
    now = datetime.now(timezone.utc)
    with storage.begin() as conn:
        conn.execute(sa.insert(t.alerts).values(
            id=alert_id, rule=rule, ticker="news", window_size="1h", window_start=now,
            last_window_start=now, severity="warning", value=0.6, threshold=0.3,
            state="firing", fired_at=now, updated_at=now, explanation="low confidence"))


def run_schedule(service: RetrainService, stop: threading.Event, results: list, errors: list,
                 **kwargs) -> threading.Thread:
    def schedule() -> None:
        try:
            service.run(stop, on_result=results.append, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported by the caller's assertions
            errors.append(exc)

    worker = threading.Thread(target=schedule)
    worker.start()
    return worker


def test_a_model_health_alert_starts_a_run_early_once_per_cooldown(champion_dir, storage, tmp_path):
    champion, base, data = champion_dir
    first = promote(ModelRegistry(storage), champion)
    add_feedback(storage, t.feedback, 20)
    # A run an hour ago: with a daily schedule, the next is not due for 23 hours.
    with storage.begin() as conn:
        conn.execute(sa.insert(t.retrain_runs).values(
            id="earlier", started_at=NOW - timedelta(hours=1), trigger="schedule", champion=first,
            decision="rejected", counts={}, gold={}, feedback={}))
    settings = settings_for(storage.url, champion, tmp_path, poll_s=0.05,
                            warm_start_lr={"full": 2e-3})
    service = RetrainService(settings, storage, Metrics(CollectorRegistry()), device="cpu")
    day = 86400.0
    assert service.due(day).trigger is None
    alert = "low_confidence:news:1h:2026-11-30T10:00Z"
    add_health_alert(storage, alert)
    assert service.due(day).trigger == f"model_health:{alert}"

    stop, results, errors = threading.Event(), [], []
    # lr unset: the warm start uses retrain.warm_start_lr for the method.
    worker = run_schedule(service, stop, results, errors, every_s=day,
                          train_config=tiny_config(base, data, epochs=1, lr=None))
    deadline = time.monotonic() + 300
    while not results and not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    worker.join(timeout=60)
    assert not worker.is_alive() and errors == []
    assert [(r["trigger"], r["encoder_lr"], r["started_from"]) for r in results] == [
        (f"model_health:{alert}", 2e-3, "champion")]
    runs = storage.retrain_runs()
    assert [(r.id == results[0]["run"], r.trigger) for r in runs] == [
        (True, f"model_health:{alert}"), (False, "schedule")]

    # Another alert within the cooldown (6 h) waits; after it, it starts the next run.
    second = "label_drift:news:1h:2026-11-30T11:00Z"
    add_health_alert(storage, second, rule="label_drift")
    assert service.due(day).trigger is None
    later = datetime.now(timezone.utc) + timedelta(hours=6, minutes=1)
    assert service.due(day, now=later).trigger == f"model_health:{second}"
    # With the trigger off, alerts start nothing.
    off = RetrainService(settings_for(storage.url, champion, tmp_path, health_trigger=False),
                         storage, device="cpu")
    assert off.due(day, now=later).trigger is None


def test_one_run_at_a_time_across_processes(champion_dir, sqlite_url, tmp_path, monkeypatch,
                                            capsys):
    champion, base, data = champion_dir
    storages = [Storage(sqlite_url), Storage(sqlite_url)]
    storages[0].migrate()
    try:
        promote(ModelRegistry(storages[0]), champion)
        add_feedback(storages[0], t.feedback, 20)
        settings = settings_for(sqlite_url, champion, tmp_path)
        first, second = (RetrainService(settings, s, device="cpu") for s in storages)
        inside, go, results, errors = threading.Event(), threading.Event(), [], []

        def hold(data):
            inside.set()
            assert go.wait(120)
            return data

        def train() -> None:
            try:
                results.append(first.run_once(tiny_config(base, data, epochs=1), transform=hold))
            except Exception as exc:  # noqa: BLE001 - reported by the assertions below
                errors.append(exc)

        worker = threading.Thread(target=train)
        worker.start()
        try:
            assert inside.wait(120), errors
            with pytest.raises(LeaseHeld) as held:
                second.run_once(tiny_config(base, data, epochs=1))
            assert f":{os.getpid()}:" in held.value.holder  # the first service's lease
            assert [r.decision for r in storages[1].retrain_runs()] == [None]  # only the first
            # Its run in progress counts: the other scheduler's run is not due.
            assert second.due(3600).trigger is None
            # The CLI says so in one line.
            monkeypatch.setenv("FINPULSE_DATABASE_URL", sqlite_url)
            config = tmp_path / "small.json"
            config.write_text(json.dumps(tiny_config(base, data, epochs=1).to_dict()))
            capsys.readouterr()
            assert main(["retrain", "--train-config", str(config), "--device", "cpu"]) == 1
            err = capsys.readouterr().err.strip()
            assert err.startswith("LeaseHeld: retrain: held by ") and "\n" not in err
        finally:
            go.set()
            worker.join(timeout=300)
        assert errors == [] and results[0]["decision"] in ("promoted", "rejected")
        # Released at the end of the run: the next one may start.
        with storages[1].begin() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(t.leases)).scalar_one() == 0
    finally:
        for s in storages:
            s.dispose()


def test_a_run_that_loses_its_lease_promotes_nothing(champion_dir, sqlite_url, tmp_path):
    champion, base, data = champion_dir
    storage = Storage(sqlite_url)
    storage.migrate()
    try:
        registry = ModelRegistry(storage)
        first = promote(registry, champion)
        add_feedback(storage, t.feedback, 40)
        service = RetrainService(settings_for(sqlite_url, champion, tmp_path), storage,
                                 device="cpu")

        def taken_over(data):
            # As if this process had stalled past the lease and another had taken it.
            with storage.begin() as conn:
                conn.execute(sa.update(t.leases).values(holder="another-host:1:x"))
            return data

        with pytest.raises(LeaseError, match="lease lost"):
            service.run_once(tiny_config(base, data, epochs=3), transform=taken_over)
        run = storage.retrain_runs()[0]
        assert run.decision == "failed" and run.reason.startswith("LeaseError: retrain: lease lost")
        assert registry.champion().version == first
        # The other holder's lease is left alone.
        with storage.begin() as conn:
            assert conn.execute(sa.select(t.leases.c.holder)).scalar_one() == "another-host:1:x"
    finally:
        storage.dispose()


def test_warm_start_learning_rate_applies_unless_a_given_config_sets_lr(tmp_path):
    settings = Settings.load(database_url=f"sqlite:///{tmp_path / 'x.db'}")
    assert settings.retrain.warm_start_lr == {"lora": 2e-4}
    storage = Storage(settings.database_url)
    try:
        service = RetrainService(settings, storage)
        lora = TrainConfig(method="lora", lr=1e-3)
        assert service.warm_config(lora, explicit=False).encoder_lr == 2e-4  # champion's own
        assert service.warm_config(lora, explicit=True).encoder_lr == 1e-3  # --train-config lr
        assert service.warm_config(TrainConfig(method="lora"), explicit=True).encoder_lr == 2e-4
        full = TrainConfig(method="full")
        assert service.warm_config(full, explicit=False).encoder_lr == full.encoder_lr
        with pytest.raises(ConfigError, match="warm_start_lr: unknown method"):
            RetrainService(Settings.load(database_url=settings.database_url,
                                         retrain={"warm_start_lr": {"lroa": 1e-4}}), storage)
        with pytest.raises(ConfigError, match="warm_start_lr"):
            Settings.load(retrain={"warm_start_lr": {"lora": 0}})
    finally:
        storage.dispose()

"""The retraining job: feedback from the database + base data -> challenger -> gate -> registry.

One run (``RetrainService.run_once``):

1. take the ``retrain`` lease (``LeaseHeld`` when another process is running one);
2. find the champion in the registry (a database without one adopts the bundled model);
3. record the run as started in ``retrain_runs``;
4. read the analysts' feedback and assemble the data (``models.continual.assemble``);
5. train the challenger: warm-started from the champion when it was trained the same
   way, on feedback plus a replay sample of the base data, at the warm-start learning
   rate; else from the base encoder;
6. register it, evaluate champion and challenger on the frozen gold set and on the
   held-back feedback, and let the gate decide; a promotion goes through the registry,
   which running scorers follow (``ModelReloader``);
7. complete the run's record and the metrics. A run that fails is recorded as ``failed``.

``run`` starts runs on a schedule (``finpulse.services.retrain_schedule``: every period,
or early when a model-health alert fires) until its stop event is set (SIGTERM): a run in
progress is abandoned between training batches, recorded as failed, and nothing is promoted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from finpulse.errors import ConfigError, FinpulseError, LeaseError, LeaseHeld
from finpulse.metrics import Metrics
from finpulse.schemas import Post
from finpulse.services.lease import LeaseKeeper
from finpulse.services.policy import Backoff, classify
from finpulse.services.retrain_schedule import Next, next_run
from finpulse.services.scorer import model_input
from finpulse.settings import Settings
from finpulse.storage import Storage
from finpulse.storage.registry import ModelRegistry, ModelVersion
from finpulse.storage.feedback import FeedbackExample
from finpulse.storage.retraining import finish_run, schedule_facts, start_run
from models import DEFAULT_MODEL_DIR
from models.artifact import read_manifest
from models.config import CONFIG_FILE, METHODS, TrainConfig
from models.continual import (
    FeedbackItem,
    GatePolicy,
    MixPolicy,
    RetrainData,
    assemble,
    evaluate_models,
    judge,
    warm_start,
)

logger = logging.getLogger(__name__)

LEASE = "retrain"

Transform = Callable[[RetrainData], RetrainData]


def feedback_items(rows: list[FeedbackExample]) -> list[FeedbackItem]:
    """Turn feedback rows into training items, with the text exactly as the scorer reads it."""
    items = []
    for row in rows:
        post = Post(id=row.post_id, source=row.source, text=row.text, title=row.title,
                    published_at=row.created_at)
        items.append(FeedbackItem(post_id=row.post_id, text=model_input(post), label=row.label,
                                  source=row.source, created_at=row.created_at))
    return items


class _Either(threading.Event):
    """An event that also reads as set once any of ``others`` is (training checks ``is_set``)."""

    def __init__(self, *others: threading.Event | None) -> None:
        super().__init__()
        self._others = [event for event in others if event is not None]

    def is_set(self) -> bool:
        return super().is_set() or any(event.is_set() for event in self._others)


def default_train_config(champion: ModelVersion) -> TrainConfig:
    """The champion's own training configuration, else the bundled model's."""
    for directory in (Path(champion.artifact_path), DEFAULT_MODEL_DIR):
        if (directory / CONFIG_FILE).is_file():
            return TrainConfig.from_file(directory / CONFIG_FILE)
    return TrainConfig.from_file(DEFAULT_MODEL_DIR / CONFIG_FILE)


class RetrainService:
    """Runs retraining once or periodically; see the module docstring.

    Args:
        settings: ``retrain`` (data mix, gate, output directory, schedule), ``model``
            (engine options) and ``alerts.rules_file`` (which rules are model-health rules).
        storage: the migrated database.
        metrics: where to count runs; None counts nothing.
        device: ``auto``, ``cpu`` or ``cuda`` for training and evaluation.

    Raises:
        ConfigError: ``retrain.warm_start_lr`` names a method that does not exist.
    """

    def __init__(self, settings: Settings, storage: Storage, metrics: Metrics | None = None,
                 *, device: str = "auto") -> None:
        self.settings = settings
        self.storage = storage
        self.metrics = metrics
        self.device = device
        self.registry = ModelRegistry(storage)
        cfg = settings.retrain
        self.mix = MixPolicy(feedback_holdout=cfg.feedback_holdout,
                             feedback_weight=cfg.feedback_weight,
                             feedback_half_life_days=cfg.feedback_half_life_days,
                             replay_examples=cfg.replay_examples)
        self.gate = GatePolicy(gold_tolerance=cfg.gold_tolerance,
                               max_class_drop=cfg.max_class_drop,
                               min_feedback_gain=cfg.min_feedback_gain)
        unknown = sorted(set(cfg.warm_start_lr) - set(METHODS))
        if unknown:
            raise ConfigError(f"retrain.warm_start_lr: unknown method(s) {', '.join(unknown)} "
                              f"(methods: {', '.join(METHODS)})", field="retrain.warm_start_lr")
        self._health_rules: tuple[str, ...] | None = None

    def champion(self) -> ModelVersion:
        """The registry's champion; a registry without one adopts the bundled model."""
        champion = self.registry.champion()
        if champion is None:
            manifest = read_manifest(DEFAULT_MODEL_DIR)
            self.registry.register(manifest["version"], base=manifest["base"],
                                   method=manifest["method"], metrics=manifest["metrics"],
                                   artifact_path=str(DEFAULT_MODEL_DIR),
                                   trainable_params=manifest.get("trainable_params"))
            self.registry.promote(manifest["version"])
            champion = self.registry.get(manifest["version"])
        return champion

    def run_once(
        self,
        train_config: TrainConfig | None = None,
        *,
        trigger: str = "manual",
        transform: Transform | None = None,
        stop: threading.Event | None = None,
    ) -> dict[str, Any]:
        """One run; returns the result (the ``finpulse retrain --json`` object).

        Args:
            train_config: the training configuration; None uses the champion's.
            trigger: recorded with the run (``manual``, ``schedule`` or
                ``model_health:<alert id>``).
            transform: applied to the assembled data before training (gate drills and
                tests: ``models.continual.shuffle_labels``).
            stop: abandons training between batches once set.

        Raises:
            LeaseHeld: another process is running a retraining run (nothing is recorded).
            LeaseError: the lease was lost during the run (recorded as ``failed``).
            FinpulseError: the run failed (it is recorded as ``failed`` first, when the
                database allows).
        """
        with LeaseKeeper(self.storage, LEASE, self.settings.retrain.lease_s) as lease:
            return self._run_recorded(train_config, trigger, transform, stop, lease)

    def _run_recorded(self, train_config: TrainConfig | None, trigger: str,
                      transform: Transform | None, stop: threading.Event | None,
                      lease: LeaseKeeper) -> dict[str, Any]:
        started = time.perf_counter()
        champion = self.champion()
        config = train_config or default_train_config(champion)
        run_id = start_run(self.storage, champion=champion.version, trigger=trigger)
        logger.info("retraining run %s (%s) started; champion %s", run_id, trigger,
                    champion.version)
        try:
            result = self._run(run_id, champion, config, transform, _Either(stop, lease.lost),
                               lease, explicit=train_config is not None)
        except BaseException as exc:
            error: BaseException = exc
            if (lease.lost.is_set() and not isinstance(exc, LeaseError)
                    and not (stop is not None and stop.is_set())):
                # Training saw the lost lease as a stop: say why it stopped.
                error = LeaseError(f"{LEASE}: lease lost during the run ({type(exc).__name__}: "
                                   f"{exc})", name=LEASE)
            reason = f"{type(error).__name__}: {error}"
            try:
                finish_run(self.storage, run_id, decision="failed", reason=reason,
                           seconds=time.perf_counter() - started)
            except FinpulseError as record_exc:
                logger.error("could not record the failed run %s: %s", run_id, record_exc)
            self._count("failed")
            logger.error("retraining run %s failed: %s", run_id, reason)
            if error is not exc:
                raise error from exc
            raise
        result["trigger"] = trigger
        result["seconds"] = round(time.perf_counter() - started, 1)
        finish_run(self.storage, run_id, decision=result["decision"], reason=result["reason"],
                   seconds=result["seconds"], challenger=result["challenger"],
                   counts=result["data"], gold=result["gold"], feedback=result["feedback"])
        self._count(result["decision"], result["gold"])
        logger.info("retraining run %s: %s %s (%s)", run_id, result["decision"],
                    result["challenger"], result["reason"])
        return result

    def _run(self, run_id: str, champion: ModelVersion, config: TrainConfig,
             transform: Transform | None, stop: threading.Event, lease: LeaseKeeper,
             *, explicit: bool) -> dict[str, Any]:
        from models.train import train_on

        cfg = self.settings.retrain
        champion_dir = Path(champion.artifact_path)
        if config.teacher:
            # A distilled champion's teachers never saw the analysts' labels: distilling
            # from them again would pull the challenger back from the corrections.
            logger.info("retraining without the champion's distillation teachers")
            config = replace(config, teacher=[], student_init="base",
                             student_layers=read_manifest(champion_dir).get("student_layers"))
        init = warm_start(champion_dir, config) if cfg.warm_start else None
        if init is not None:
            config = self.warm_config(config, explicit=explicit)
        data = assemble(config, feedback_items(self.storage.feedback_examples()),
                        gold_split=cfg.gold_split or DEFAULT_MODEL_DIR / "split.csv",
                        policy=self.mix, warm=init is not None, now=datetime.now(timezone.utc))
        if transform is not None:
            data = transform(data)
        output = cfg.output_dir / f"retrain-{run_id}"
        manifest = train_on(
            config, output, data.train, data.validation, data.gold, weights=data.weights,
            init=init, device=self.device, stop=stop,
            extra={"retrain_run": run_id, "data_counts": data.counts,
                   "started_from": champion.version if init is not None else config.base})
        challenger = manifest["version"]
        self.registry.register(challenger, base=manifest["base"], method=manifest["method"],
                               metrics=manifest["metrics"], artifact_path=str(output.resolve()),
                               trainable_params=manifest.get("trainable_params"))
        models = {"champion": champion_dir, "challenger": output}
        # The gate judges both models as the scorers run them (backend, dtype, graph cache):
        # on a CPU that is the int8 graph, and the challenger's graph built here is the one
        # a scorer then loads from the cache when the challenger is promoted.
        engine = self.settings.model
        options = {"device": self.device, "dtype": engine.dtype, "max_length": engine.max_length,
                   "batch_tokens": engine.batch_tokens, "backend": engine.backend,
                   "cache_dir": engine.cache_dir}
        gold = evaluate_models(models, data.gold, **options)
        feedback = evaluate_models(models, data.feedback_eval, **options)
        decision, reason = judge(gold, feedback, self.gate)
        lease.confirm()  # a run that lost its lease must not promote: another may be running
        current = self.registry.champion()
        if decision == "promoted" and (current is None or current.version != champion.version):
            # Someone promoted or rolled back meanwhile: the comparison no longer holds.
            decision, reason = "rejected", (f"the champion changed during the run (now "
                                            f"{current.version if current else 'none'}); {reason}")
        if decision == "promoted":
            self.registry.promote(challenger)
        return {"run": run_id, "champion": champion.version, "challenger": challenger,
                "started_from": "champion" if init is not None else "base_encoder",
                "encoder_lr": config.encoder_lr,
                "data": data.counts, "gold": gold, "feedback": feedback,
                "decision": decision, "reason": reason, "artifact": str(output)}

    def warm_config(self, config: TrainConfig, *, explicit: bool) -> TrainConfig:
        """The configuration of a warm start: ``lr`` set to ``retrain.warm_start_lr[method]``.

        A configuration given explicitly (``--train-config``) that sets ``lr`` keeps it; the
        champion's own configuration always gets the warm-start rate (its ``lr`` was chosen
        for training from the base encoder). A method without a warm-start rate keeps ``lr``.
        """
        lr = self.settings.retrain.warm_start_lr.get(config.method)
        if lr is None or (explicit and config.lr is not None):
            return config
        return replace(config, lr=lr)

    def _count(self, decision: str, gold: dict[str, Any] | None = None) -> None:
        if self.metrics is None:
            return
        self.metrics.retrain_runs.labels(decision=decision).inc()
        self.metrics.retrain_last_run.set_to_current_time()
        for model, values in (gold or {}).items():
            self.metrics.retrain_gold_macro_f1.labels(model=model).set(values["macro_f1"])

    def health_rules(self) -> tuple[str, ...]:
        """Names of the enabled model-health rules (``alerts.rules_file``); () when disabled.

        Raises:
            ConfigError: the rules file cannot be read.
        """
        if self._health_rules is None:
            from monitor.rules import RuleSet

            self._health_rules = ()
            if self.settings.retrain.health_trigger:
                rules = RuleSet.load(self.settings.alerts.rules_file)
                self._health_rules = tuple(rule.name for rule in rules.model_health)
        return self._health_rules

    def due(self, every_s: float, *, now: datetime | None = None,
            last_attempt: datetime | None = None) -> Next:
        """Whether the schedule starts a run now (``finpulse.services.retrain_schedule``).

        Args:
            every_s: the schedule's period in seconds.
            now: the time to decide at (default: now).
            last_attempt: when this process last started a run.

        Raises:
            StorageError: the database is unreachable or refused.
            ConfigError: the alert rules file cannot be read.
        """
        cfg = self.settings.retrain
        cooldown = timedelta(seconds=cfg.health_cooldown_s) if cfg.health_trigger else None
        facts = schedule_facts(self.storage, self.health_rules())
        return next_run(facts, now=now or datetime.now(timezone.utc),
                        every=timedelta(seconds=every_s), cooldown=cooldown,
                        last_attempt=last_attempt)

    def run(self, stop: threading.Event, *, every_s: float,
            train_config: TrainConfig | None = None,
            on_result: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Start runs on the schedule until ``stop`` is set.

        The database is looked at every ``retrain.poll_s``: a run starts when one is due
        or a model-health alert asks for one (``due``). A run another process holds the
        lease for is skipped. Faults follow ``finpulse.services.policy``: a transient one
        (database unreachable) is retried with capped back-off, a fatal one
        (configuration, a model that cannot be loaded or trained) ends the loop with the
        error, anything else is logged (the run is recorded as failed) and the schedule
        goes on. A run stopped by ``stop`` ends it.

        Args:
            stop: set by SIGTERM/SIGINT.
            every_s: seconds from one run's start to the next.
            train_config: as for ``run_once``.
            on_result: called with each completed run's result.
        """
        backoff = Backoff(base_s=5.0, cap_s=min(every_s, 600.0))
        poll_s = self.settings.retrain.poll_s
        last_attempt: datetime | None = None
        retry: str | None = None  # the trigger of a run to retry after a transient fault
        while not stop.is_set():
            trigger, attempt = retry, None
            try:
                if trigger is None:
                    upcoming = self.due(every_s, last_attempt=last_attempt)
                    trigger = upcoming.trigger
                if trigger is None:
                    wait = (upcoming.due_at - datetime.now(timezone.utc)).total_seconds()
                    stop.wait(min(poll_s, max(wait, 0.0)))
                    continue
                attempt = datetime.now(timezone.utc)
                result = self.run_once(train_config, trigger=trigger, stop=stop)
            except LeaseHeld as exc:
                logger.info("retraining run (%s) skipped: another process is running one "
                            "(%s)", trigger, exc)
                retry = None
                stop.wait(poll_s)
                continue
            except FinpulseError as exc:
                if stop.is_set():
                    break
                fault = classify(exc)
                if fault == "fatal":
                    raise
                if fault == "transient":
                    delay = backoff.next_delay()
                    logger.warning("retraining failed (%s); retrying in %.0f s", exc, delay)
                    retry = trigger
                    stop.wait(delay)
                    continue
                retry = None
                if attempt is None:  # the schedule could not be read: look again later
                    logger.error("retraining schedule: %s", exc)
                    stop.wait(poll_s)
                    continue
                logger.error("retraining run failed (%s); next run as scheduled", exc)
                last_attempt = attempt
            else:
                last_attempt, retry = attempt, None
                if on_result is not None:
                    on_result(result)
            backoff.reset()

"""Continual learning: the challenger's training set, its warm start, and the promotion gate.

A retraining run learns from analysts' corrections without forgetting what the champion
knew. The pieces here are pure model-stage logic (no database, no settings); the wiring
lives in ``finpulse/services/retrain.py``:

- ``assemble`` builds the data: the base files split exactly as ``finpulse train`` splits
  them, minus the frozen **gold set** (the ``test`` rows of a split file, by default the
  bundled model's; no run ever trains or early-stops on it), plus the analysts' feedback
  (the newest share held back for the gate; the rest weighted by recency), plus either a
  **replay** sample of the base training split (warm start from the champion: rehearsal
  against forgetting) or the whole base training split (cold start from the base encoder).
- ``warm_start`` loads the champion's artifact with its adapter (or weights) trainable.
- ``evaluate_models`` scores champion and challenger on the same examples; ``judge``
  decides ``promoted`` or ``rejected`` and says why.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from finpulse.errors import ConfigError, DataError, ModelError
from finpulse.schemas import LABELS
from models.config import TrainConfig
from models.data import Example, load_dataset, read_split, split_examples, text_key

logger = logging.getLogger(__name__)

Decision = Literal["promoted", "rejected"]
FEEDBACK_SOURCE = "feedback"


@dataclass(frozen=True)
class FeedbackItem:
    """One analyst's label for a stored post.

    Attributes:
        post_id: the post labelled.
        text: the text the classifier reads for that post.
        label: ``negative``, ``neutral`` or ``positive``.
        source: the post's source (``news``, ``social``, ...).
        created_at: when the label was given (timezone-aware).
    """

    post_id: str
    text: str
    label: str
    source: str
    created_at: datetime


@dataclass(frozen=True)
class MixPolicy:
    """How a run mixes its training data.

    Attributes:
        feedback_holdout: share of the feedback, newest first, held back for the gate.
        feedback_weight: loss weight of a feedback label given just now (base data weigh 1).
        feedback_half_life_days: a label's weight halves every this many days.
        replay_examples: base training examples replayed when warm-starting.
    """

    feedback_holdout: float = 0.2
    feedback_weight: float = 3.0
    feedback_half_life_days: float = 30.0
    replay_examples: int = 2000

    def __post_init__(self) -> None:
        if not 0.0 <= self.feedback_holdout < 1.0:
            raise ConfigError("feedback_holdout: must be in [0, 1)", field="feedback_holdout")
        if self.feedback_weight <= 0 or self.feedback_half_life_days <= 0:
            raise ConfigError("feedback_weight and feedback_half_life_days: must be > 0",
                              field="feedback_weight")
        if self.replay_examples < 0:
            raise ConfigError("replay_examples: must be >= 0", field="replay_examples")


@dataclass(frozen=True)
class GatePolicy:
    """When a challenger may replace the champion.

    Attributes:
        gold_tolerance: how far the gold macro-F1 may fall below the champion's.
        max_class_drop: how far any one class's gold F1 may fall.
        min_feedback_gain: how much the held-back-feedback macro-F1 must exceed the
            champion's (0: strictly better).
    """

    gold_tolerance: float = 0.01
    max_class_drop: float = 0.03
    min_feedback_gain: float = 0.0


@dataclass
class RetrainData:
    """Everything one run trains and judges on.

    Attributes:
        train: the training examples (base or replay, then feedback).
        weights: a loss weight per training example.
        validation: early-stopping examples: the base validation split (gold removed)
            and a ``validation`` share of the training feedback.
        gold: the frozen gold set.
        feedback_eval: the held-back, most recent feedback.
        counts: examples per source (``base``, ``replay``, ``feedback``,
            ``feedback_held_back``, ``validation``, ``gold``, and what was excluded).
        gold_keys: the gold set's text keys (every key of the split file's test rows).
    """

    train: list[Example]
    weights: list[float]
    validation: list[Example]
    gold: list[Example]
    feedback_eval: list[Example]
    counts: dict[str, int] = field(default_factory=dict)
    gold_keys: frozenset[str] = frozenset()


def read_gold_keys(split_file: Path) -> frozenset[str]:
    """The gold set: the text keys of a split file's ``test`` rows.

    Raises:
        DataError: the file is missing, not a split file, or has no test rows.
    """
    keys = frozenset(key for key, row in read_split(split_file).items() if row["split"] == "test")
    if not keys:
        raise DataError(f"{split_file}: no test rows to use as the gold set")
    return keys


def recency_weight(created_at: datetime, now: datetime, policy: MixPolicy) -> float:
    """A feedback label's loss weight: ``feedback_weight`` halved every half-life of age."""
    age_days = max((now - created_at).total_seconds(), 0.0) / 86400.0
    return policy.feedback_weight * 0.5 ** (age_days / policy.feedback_half_life_days)


def latest_feedback(items: Sequence[FeedbackItem]) -> list[FeedbackItem]:
    """One label per text, the newest; returned newest first."""
    newest: dict[str, FeedbackItem] = {}
    for item in sorted(items, key=lambda i: (i.created_at, i.post_id), reverse=True):
        if item.label not in LABELS:
            raise DataError(f"feedback on {item.post_id}: unknown label {item.label!r}")
        newest.setdefault(text_key(item.text), item)
    return list(newest.values())


def assemble(
    config: TrainConfig,
    feedback: Sequence[FeedbackItem],
    *,
    gold_split: Path,
    policy: MixPolicy,
    warm: bool,
    now: datetime,
) -> RetrainData:
    """Build a run's training, validation, gold and held-back feedback sets.

    Args:
        config: the training configuration (its ``data``, ``seed``, split fractions and
            ``max_train_examples``, which caps the base or replay examples).
        feedback: the analysts' labels, any order; later labels of a text win.
        gold_split: a split file whose ``test`` rows are the frozen gold set.
        policy: the mix (hold-out share, feedback weights, replay size).
        warm: True when training continues from the champion (replay a sample of the
            base training split); False trains from the base encoder (all of it).
        now: the reference time for feedback ages.

    Returns:
        The run's data. No gold text is ever in ``train`` or ``validation``.

    Raises:
        DataError: unreadable data, or none of the gold texts is in the data files.
        ModelError: the gold set leaked into the training set (a bug; never trained on).
    """
    dataset = load_dataset(config.data)
    gold_keys = read_gold_keys(gold_split)
    gold = [ex for ex in dataset.examples if ex.key in gold_keys]
    if not gold:
        raise DataError(f"none of the {len(gold_keys)} gold texts of {gold_split} is in "
                        f"the data files ({', '.join(config.data)})")
    # The same split `finpulse train` makes, so with the champion's config the replayed
    # examples are exactly ones it learned from and its validation set is unchanged.
    split = split_examples(dataset.examples, seed=config.seed, validation=config.validation,
                           test=config.test)

    labelled = latest_feedback(feedback)
    n_held = round(len(labelled) * policy.feedback_holdout)
    if policy.feedback_holdout > 0 and len(labelled) >= 2:
        n_held = max(n_held, 1)
    held, rest = labelled[:n_held], labelled[n_held:]
    held_keys = {text_key(item.text) for item in held}
    feedback_train = [item for item in rest if text_key(item.text) not in gold_keys]
    feedback_keys = {text_key(item.text) for item in feedback_train}
    # Early stopping must see the feedback too, or the epoch that learned least of it (the
    # first, closest to the champion) wins ties on the base validation set.
    shuffled = random.Random(config.seed).sample(feedback_train, len(feedback_train))
    n_val = round(len(shuffled) * config.validation) if len(shuffled) >= 10 else 0
    feedback_val, feedback_train = shuffled[:n_val], shuffled[n_val:]
    # A text an analyst labelled is learned with the analyst's label, and a held-back text
    # must be unseen: drop such texts from the base data.
    blocked = gold_keys | held_keys | feedback_keys
    base_train = [ex for ex in split["train"] if ex.key not in blocked]
    validation = [ex for ex in split["validation"] if ex.key not in blocked]
    validation += [_feedback_example(item) for item in feedback_val]

    cap = config.max_train_examples
    rng = random.Random(config.seed)
    if warm:
        size = min(policy.replay_examples, cap or policy.replay_examples, len(base_train))
        chosen, replay = rng.sample(base_train, size), True
    else:
        chosen = rng.sample(base_train, cap) if cap and len(base_train) > cap else base_train
        replay = False
    train = list(chosen)
    weights = [1.0] * len(train)
    for item in feedback_train:
        train.append(_feedback_example(item))
        weights.append(recency_weight(item.created_at, now, policy))
    leaked = {ex.key for ex in (*train, *validation)} & gold_keys
    if leaked:
        raise ModelError(f"{len(leaked)} gold example(s) reached the training data")
    counts = {
        "base": 0 if replay else len(chosen),
        "replay": len(chosen) if replay else 0,
        "feedback": len(feedback_train),
        "feedback_validation": len(feedback_val),
        "feedback_held_back": len(held),
        "feedback_in_gold": len(rest) - len(feedback_train) - len(feedback_val),
        "validation": len(validation),
        "gold": len(gold),
        "gold_missing": len(gold_keys) - len(gold),
        "base_excluded": len(split["train"]) + len(split["validation"])
        - len(base_train) - (len(validation) - len(feedback_val)),
    }
    logger.info("retraining data: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
    return RetrainData(train=train, weights=weights, validation=validation, gold=gold,
                       feedback_eval=[_feedback_example(item) for item in held],
                       counts=counts, gold_keys=gold_keys)


def _feedback_example(item: FeedbackItem) -> Example:
    """The labelled post as a training example; its source (``feedback:social``) keeps the
    post's kind, so a ``source_token`` model trains on and is judged with the right marker."""
    return Example(item.text, item.label, text_key(item.text),
                   (f"{FEEDBACK_SOURCE}:{item.source}",))


def shuffle_labels(data: RetrainData, seed: int) -> RetrainData:
    """Permute the training labels: a deliberately broken challenger (a drill for the gate)."""
    labels = [ex.label for ex in data.train]
    random.Random(seed).shuffle(labels)
    train = [replace(ex, label=label) for ex, label in zip(data.train, labels)]
    return replace(data, train=train)


def warm_start(directory: Path, config: TrainConfig) -> tuple[Any, Any] | None:
    """Load a trained artifact to continue training it, when it matches ``config``.

    Args:
        directory: the champion's artifact.
        config: the run's configuration; its ``method`` and ``base`` must be the artifact's.

    Returns:
        ``(model, tokenizer)`` with the adapter (lora/ia3), the prompt (prompt) or every
        weight (full) and the head trainable, or None when the artifact was trained another
        way or with P-tuning (its artifact holds the prompt, not the MLP that trained it).

    Raises:
        ModelError: the artifact cannot be loaded.
    """
    from models.artifact import load_classifier, read_manifest
    from models.network import mark_trainable

    manifest = read_manifest(directory)
    if manifest["method"] != config.method or manifest["base"] != config.base:
        logger.info("champion is %s on %s, the run is %s on %s: training from the base encoder",
                    manifest["method"], manifest["base"], config.method, config.base)
        return None
    if config.method == "ptuning":
        # The artifact keeps the prompt the MLP made, not the MLP: nothing to continue.
        logger.info("P-tuning champion: training from the base encoder")
        return None
    model, tokenizer, _ = load_classifier(directory, merge=False)
    mark_trainable(model, config.method)
    model.dropout.p = config.dropout
    return model, tokenizer


def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    """The part of ``compute_metrics``'s output a run records: n, accuracy, macro-F1, per class."""
    return {
        "n": metrics["n"],
        "accuracy": round(metrics["accuracy"], 4),
        "macro_f1": round(metrics["macro_f1"], 4),
        "per_class": {label: {k: round(v, 4) if isinstance(v, float) else v
                              for k, v in values.items()}
                      for label, values in metrics["per_class"].items()},
    }


def evaluate_models(
    models: dict[str, Path], examples: Sequence[Example], **engine_options: Any
) -> dict[str, dict[str, Any]]:
    """Score several artifacts on the same examples.

    Args:
        models: name (``champion``, ``challenger``) -> artifact directory.
        examples: the labelled examples; empty gives ``{}``.
        engine_options: passed to ``SentimentEngine.load`` (device, dtype, max_length, ...).

    Returns:
        name -> ``summarise``d metrics.

    Raises:
        ModelError: an artifact cannot be loaded.
    """
    from models.evaluate import evaluate_engine
    from models.inference import SentimentEngine

    if not examples:
        return {}
    rows = [(ex.text, ex.label) for ex in examples]
    sources = [ex.kind for ex in examples]
    return {name: summarise(evaluate_engine(SentimentEngine.load(path, **engine_options), rows,
                                            sources=sources))
            for name, path in models.items()}


def judge(
    gold: dict[str, dict[str, Any]], feedback: dict[str, dict[str, Any]], policy: GatePolicy
) -> tuple[Decision, str]:
    """Decide whether the challenger replaces the champion.

    Promoted only if: its gold macro-F1 is at most ``gold_tolerance`` below the champion's;
    no class's gold F1 falls by more than ``max_class_drop``; and on the held-back feedback
    its macro-F1 beats the champion's by more than ``min_feedback_gain``. With no held-back
    feedback there is no new evidence, so it must instead beat the champion on gold.

    Args:
        gold: ``{"champion": metrics, "challenger": metrics}`` on the gold set.
        feedback: the same on the held-back feedback, or ``{}`` when there is none.
        policy: the thresholds.

    Returns:
        ``(decision, reason)``; the reason names every check that failed, or the margins.
    """
    champ, chall = gold["champion"], gold["challenger"]
    failures: list[str] = []
    if chall["macro_f1"] < champ["macro_f1"] - policy.gold_tolerance:
        failures.append(f"gold macro-F1 {chall['macro_f1']:.4f} is below the champion's "
                        f"{champ['macro_f1']:.4f} by more than {policy.gold_tolerance:g}")
    for label in LABELS:
        drop = champ["per_class"][label]["f1"] - chall["per_class"][label]["f1"]
        if drop > policy.max_class_drop:
            failures.append(f"gold F1 of {label} fell by {drop:.4f} "
                            f"(more than {policy.max_class_drop:g})")
    if feedback:
        fb_champ, fb_chall = feedback["champion"]["macro_f1"], feedback["challenger"]["macro_f1"]
        if not fb_chall > fb_champ + policy.min_feedback_gain:
            failures.append(f"not better on held-back feedback (macro-F1 {fb_chall:.4f} vs "
                            f"champion {fb_champ:.4f}, n={feedback['champion']['n']})")
        evidence = (f"held-back feedback macro-F1 {fb_chall:.4f} vs {fb_champ:.4f} "
                    f"(n={feedback['champion']['n']})")
    else:
        if not chall["macro_f1"] > champ["macro_f1"]:
            failures.append(f"no held-back feedback, and gold macro-F1 {chall['macro_f1']:.4f} "
                            f"does not beat the champion's {champ['macro_f1']:.4f}")
        evidence = "no held-back feedback; better on gold"
    if failures:
        return "rejected", "; ".join(failures)
    return "promoted", (f"gold macro-F1 {chall['macro_f1']:.4f} vs {champ['macro_f1']:.4f}; "
                        f"no class fell more than {policy.max_class_drop:g}; {evidence}")

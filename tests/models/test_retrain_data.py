"""Retraining data and gate logic (models.continual): gold never trained on, feedback mixed, gate."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from finpulse.errors import ConfigError
from models.config import TrainConfig
from models.continual import (
    FeedbackItem,
    GatePolicy,
    MixPolicy,
    assemble,
    judge,
    read_gold_keys,
    recency_weight,
    shuffle_labels,
    warm_start,
)
from models.data import load_dataset, split_examples, write_split
from tests.models.tiny import make_rows, write_csv

NOW = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)


@pytest.fixture()
def base(tmp_path: Path) -> tuple[TrainConfig, Path]:
    """Base data and a gold split file made as `finpulse train` makes its split."""
    data = write_csv(tmp_path / "base.csv", make_rows(300, seed=5))
    config = TrainConfig(data=[str(data)], seed=13, max_train_examples=None, progress=False)
    split = split_examples(load_dataset(config.data).examples, seed=config.seed,
                           validation=config.validation, test=config.test)
    write_split(tmp_path / "split.csv", split)
    return config, tmp_path / "split.csv"


def feedback(n: int, *, start: int = 0) -> list[FeedbackItem]:
    return [FeedbackItem(post_id=f"p{i}", text=f"guidance slashed item {i}", label="negative",
                         source="news", created_at=NOW - timedelta(days=i))
            for i in range(start, start + n)]


def test_gold_set_is_never_in_training_or_validation(base):
    config, split_file = base
    gold_keys = read_gold_keys(split_file)
    gold_text = next(ex.text for ex in load_dataset(config.data).examples if ex.key in gold_keys)
    # An analyst labelled a gold text: it is still not trained on.
    items = feedback(10) + [FeedbackItem("g", gold_text, "positive", "news", NOW)]
    data = assemble(config, items, gold_split=split_file, policy=MixPolicy(feedback_holdout=0.0),
                    warm=False, now=NOW)
    trained = {ex.key for ex in data.train} | {ex.key for ex in data.validation}
    assert trained & gold_keys == set()
    assert {ex.key for ex in data.gold} == gold_keys
    assert data.counts["feedback_in_gold"] == 1
    assert data.counts["feedback"] + data.counts["feedback_validation"] == 10
    assert data.counts["feedback_validation"] == 1
    assert data.counts["gold"] == len(gold_keys) == 30


def test_feedback_keeps_its_posts_source_kind(base):
    """A label on a social post trains and is judged as social (the source-token marker)."""
    config, split_file = base
    items = [FeedbackItem(f"s{i}", f"to the moon item {i}", "positive", "social",
                          NOW - timedelta(days=i)) for i in range(5)] + feedback(5, start=5)
    data = assemble(config, items, gold_split=split_file, policy=MixPolicy(feedback_holdout=0.4),
                    warm=False, now=NOW)
    kinds = {ex.text: ex.kind for ex in (*data.train, *data.feedback_eval)
             if ex.sources[0].startswith("feedback:")}
    assert {kinds[item.text] for item in items[:5]} == {"social"}
    assert {kinds[item.text] for item in items[5:]} == {"news"}


def test_a_different_seed_still_keeps_gold_out(base):
    """With another split (seed), the gold rows fall into its train split and are removed."""
    config, split_file = base
    other = TrainConfig.from_dict({**config.to_dict(), "seed": 99})
    data = assemble(other, [], gold_split=split_file, policy=MixPolicy(), warm=False, now=NOW)
    assert data.counts["base_excluded"] > 0
    assert {ex.key for ex in data.train} & data.gold_keys == set()


def test_newest_feedback_is_held_back_and_weights_decay_with_age(base):
    config, split_file = base
    items = feedback(10)
    policy = MixPolicy(feedback_holdout=0.2, feedback_weight=4.0, feedback_half_life_days=3.0)
    data = assemble(config, items, gold_split=split_file, policy=policy, warm=False, now=NOW)
    assert [ex.text for ex in data.feedback_eval] == [items[0].text, items[1].text]
    fed = {ex.text: w for ex, w in zip(data.train, data.weights)
           if ex.sources == ("feedback:news",)}
    assert set(fed) == {item.text for item in items[2:]}
    assert fed[items[2].text] == pytest.approx(4.0 * 0.5 ** (2 / 3))
    assert fed[items[2].text] > fed[items[9].text]
    base_weights = [w for ex, w in zip(data.train, data.weights)
                    if ex.sources != ("feedback:news",)]
    assert set(base_weights) == {1.0}
    assert recency_weight(NOW, NOW, policy) == 4.0
    # A later label of the same text replaces an earlier one.
    relabel = FeedbackItem("p9b", items[9].text, "positive", "news", NOW)
    again = assemble(config, [*items, relabel], gold_split=split_file, policy=policy,
                     warm=False, now=NOW)
    labels = {ex.label for ex in (*again.train, *again.feedback_eval) if ex.text == items[9].text}
    assert labels == {"positive"}


def test_warm_start_replays_a_sample_and_cold_start_uses_all_base_data(base):
    config, split_file = base
    capped = TrainConfig.from_dict({**config.to_dict(), "max_train_examples": 50})
    warm = assemble(capped, feedback(5), gold_split=split_file,
                    policy=MixPolicy(replay_examples=80), warm=True, now=NOW)
    assert (warm.counts["base"], warm.counts["replay"]) == (0, 50)
    cold = assemble(config, feedback(5), gold_split=split_file, policy=MixPolicy(),
                    warm=False, now=NOW)
    assert cold.counts["replay"] == 0
    assert cold.counts["base"] == 240  # 80% of 300, none excluded
    assert len(cold.train) == len(cold.weights) == 240 + cold.counts["feedback"]


def test_shuffle_labels_keeps_texts_and_label_counts(base):
    config, split_file = base
    data = assemble(config, [], gold_split=split_file, policy=MixPolicy(), warm=False, now=NOW)
    broken = shuffle_labels(data, seed=1)
    assert [ex.text for ex in broken.train] == [ex.text for ex in data.train]
    assert sorted(ex.label for ex in broken.train) == sorted(ex.label for ex in data.train)
    assert [ex.label for ex in broken.train] != [ex.label for ex in data.train]


def metrics(macro: float, **f1: float) -> dict:
    per_class = {label: {"f1": f1.get(label, macro)} for label in ("negative", "neutral", "positive")}
    return {"n": 50, "macro_f1": macro, "per_class": per_class}


def test_gate_promotes_only_when_every_check_passes():
    policy = GatePolicy(gold_tolerance=0.01, max_class_drop=0.03)
    gold = {"champion": metrics(0.80), "challenger": metrics(0.795)}
    better = {"champion": metrics(0.50), "challenger": metrics(0.70)}
    decision, reason = judge(gold, better, policy)
    assert decision == "promoted" and "0.7000 vs 0.5000" in reason
    # Worse on gold beyond the tolerance.
    decision, reason = judge({"champion": metrics(0.80), "challenger": metrics(0.78)}, better,
                             policy)
    assert decision == "rejected" and "below the champion's" in reason
    # One class collapses although the average holds.
    dropped = {"champion": metrics(0.80), "challenger": metrics(0.80, negative=0.70)}
    decision, reason = judge(dropped, better, policy)
    assert decision == "rejected" and "F1 of negative fell by 0.1000" in reason
    # Not better on the feedback (a tie is not better).
    same = {"champion": metrics(0.60), "challenger": metrics(0.60)}
    decision, reason = judge(gold, same, policy)
    assert decision == "rejected" and "not better on held-back feedback" in reason


def test_gate_without_feedback_needs_a_better_gold_score():
    policy = GatePolicy()
    assert judge({"champion": metrics(0.80), "challenger": metrics(0.80)}, {}, policy)[0] == "rejected"
    decision, reason = judge({"champion": metrics(0.80), "challenger": metrics(0.81)}, {}, policy)
    assert decision == "promoted" and "no held-back feedback" in reason


def test_mix_policy_names_bad_values():
    with pytest.raises(ConfigError, match="feedback_holdout"):
        MixPolicy(feedback_holdout=1.0)



def test_warm_start_trains_the_champions_adapter_only_when_trained_the_same_way(tiny_artifact):
    from models.artifact import read_manifest

    manifest = read_manifest(tiny_artifact)
    same = TrainConfig.from_file(tiny_artifact / "train_config.json")
    model, _ = warm_start(tiny_artifact, same)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name.startswith("head.") for name in trainable)
    assert any(name.startswith("head.") for name in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == manifest["trainable_params"]
    other = TrainConfig.from_dict({**same.to_dict(), "method": "full"})
    assert warm_start(tiny_artifact, other) is None

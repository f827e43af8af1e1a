"""Alert rules as YAML: the bundled defaults load, bad files fail naming the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from finpulse.errors import ConfigError
from monitor.rules import (
    NegativeVolumeSpikeRule,
    RuleSet,
    SentimentDropRule,
    VolumeSpikeRule,
    parse_duration,
)


def test_bundled_rules_load_with_every_kind() -> None:
    rules = RuleSet.load()
    kinds = {type(rule) for rule in rules.enabled}
    assert kinds == {SentimentDropRule, NegativeVolumeSpikeRule, VolumeSpikeRule}
    assert [r.name for r in rules.risk_events] == ["risk_event"]
    assert {r.check for r in rules.model_health} == {"low_confidence", "label_drift"}
    drop = next(r for r in rules.rules if isinstance(r, SentimentDropRule))
    assert (drop.window, drop.z_threshold, drop.min_posts, drop.cooldown) == (
        "1h",
        3.0,
        5,
        timedelta(hours=6),
    )
    assert rules.windows == ("1h",)


def test_a_minimal_rule_takes_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - {name: drop_5m, kind: sentiment_drop, window: 5m, cooldown: 90s}\n"
    )
    (rule,) = RuleSet.load(path).rules
    assert isinstance(rule, SentimentDropRule)
    assert (rule.window, rule.cooldown, rule.min_drop) == ("5m", timedelta(seconds=90), 0.3)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            "rules:\n  - {name: a, kind: sentiment_drop, z_threshold: -1}\n",
            "rules[0].z_threshold",
            "greater than 0",
        ),
        (
            "rules:\n  - {name: a, kind: sentiment_drop}\n"
            "  - {name: b, kind: negative_volume_spike, ratio: 0.5}\n",
            "rules[1].ratio",
            "greater than 1",
        ),
        (
            "rules:\n  - {name: a, kind: sentiment_drop, cooldown: soon}\n",
            "rules[0].cooldown",
            "invalid duration",
        ),
        ("rules:\n  - {name: a, kind: sentiment_drop, window: 2m}\n", "rules[0].window", "1m"),
        (
            "rules:\n  - {name: a, kind: sentiment_drop, treshold: 3}\n",
            "rules[0].treshold",
            "Extra inputs",
        ),
        ("rules:\n  - {name: a, kind: volume_magic}\n", "rules[0]", "volume_magic"),
        (
            "rules:\n  - {name: a, kind: sentiment_drop}\n  - {name: a, kind: sentiment_drop}\n",
            "rules",
            "duplicate",
        ),
        ("rules:\n  - {name: v, kind: volume_spike, min_posts: 0}\n", "rules[0].min_posts", "greater than or equal to 1"),
        ("rules:\n  - {name: r, kind: risk_event}\n", "rules[0].phrases", "Field required"),
        ("rules:\n  - {name: r, kind: risk_event, phrases: []}\n", "rules[0].phrases", "at least 1"),
        (
            "rules:\n  - {name: r, kind: risk_event, phrases: [fraud, '  ']}\n",
            "rules[0].phrases",
            "phrase 1 is blank",
        ),
        (
            "rules:\n  - {name: r, kind: risk_event, phrases: [fraud], labels: [bad]}\n",
            "rules[0].labels[0]",
            "negative",
        ),
        (
            "rules:\n  - {name: r, kind: risk_event, phrases: [fraud], min_confidence: 2}\n",
            "rules[0].min_confidence",
            "less than or equal to 1",
        ),
        ("rules:\n  - {name: h, kind: model_health}\n", "rules[0].check", "Field required"),
        (
            "rules:\n  - {name: h, kind: model_health, check: drift}\n",
            "rules[0].check",
            "label_drift",
        ),
        (
            "rules:\n  - {name: h, kind: model_health, check: label_drift, test: ks}\n",
            "rules[0].test",
            "psi",
        ),
        (
            (
                "rules:\n  - {name: ok, kind: sentiment_drop}\n"
                "  - {name: health, kind: model_health, check: low_confidence, max_share: 1.5}\n"
            ),
            "rules[1].max_share",
            "rule 'health'",
        ),
    ],
)
def test_invalid_rules_name_the_field(tmp_path: Path, body: str, field: str, words: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=words) as caught:
        RuleSet.load(path)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        RuleSet.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(ConfigError, match="YAML"):
        RuleSet.load(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        RuleSet.load(bad)


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration(30) == timedelta(seconds=30)
    with pytest.raises(ValueError):
        parse_duration("5 weeks")


def test_fingerprint_follows_what_the_baseline_depends_on() -> None:
    rule = SentimentDropRule(name="a", kind="sentiment_drop")
    assert rule.model_copy(update={"z_threshold": 4.0}).fingerprint() == rule.fingerprint()
    assert (
        SentimentDropRule(name="a", kind="sentiment_drop", halflife=6).fingerprint()
        != rule.fingerprint()
    )


def test_risk_event_phrases_are_cleaned_and_the_fingerprint_follows_them(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - {name: r, kind: risk_event, phrases: [Fraud, '  Chapter   11 ', fraud]}\n"
    )
    (rule,) = RuleSet.load(path).risk_events
    assert rule.phrases == ("fraud", "chapter 11")
    assert rule.labels == ("negative",)
    assert RuleSet.load(path).enabled == ()  # not a window rule: alerting.evaluate skips it
    assert rule.model_copy(update={"phrases": ("fraud",)}).fingerprint() != rule.fingerprint()

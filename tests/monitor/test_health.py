"""Model health per source: PSI / chi-square maths, and alerts over stored windows."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from finpulse.schemas import ScoredPost
from finpulse.storage import Storage, tables
from finpulse.storage.outbox import dispatch
from finpulse.storage.subscriptions import create_subscription
from monitor.health import chi_square, evaluate_model_health, psi, shares
from monitor.rules import RuleSet
from tests.records import T0, scored

H = timedelta(hours=1)
M = timedelta(minutes=1)


def test_psi_is_zero_for_the_same_mix_and_grows_with_the_shift() -> None:
    ref = {"negative": 20, "neutral": 60, "positive": 20}
    assert psi(ref, ref) == 0.0
    # Same mix, ten times fewer posts: the smoothing (0.5 per label) moves it only a little.
    assert psi({"negative": 2, "neutral": 6, "positive": 2}, ref) < 0.01
    small = psi({"negative": 25, "neutral": 55, "positive": 20}, ref)
    large = psi({"negative": 60, "neutral": 30, "positive": 10}, ref)
    assert 0 < small < 0.1
    assert large > 0.25
    # By hand, smoothed shares w, r: sum((w - r) ln(w / r)).
    w, r = shares({"negative": 60, "neutral": 30, "positive": 10}), shares(ref)
    assert large == pytest.approx(sum((w[k] - r[k]) * math.log(w[k] / r[k]) for k in w))
    assert math.isfinite(psi({"negative": 50}, ref))  # absent labels stay finite


def test_chi_square_p_value_has_two_degrees_of_freedom() -> None:
    ref = {"negative": 100, "neutral": 100, "positive": 100}
    stat, p = chi_square({"negative": 10, "neutral": 10, "positive": 10}, ref)
    assert stat == pytest.approx(0.0) and p == pytest.approx(1.0)
    stat, p = chi_square({"negative": 30, "neutral": 0, "positive": 0}, ref)
    assert stat == pytest.approx(60.0, rel=0.01)
    assert p == pytest.approx(math.exp(-stat / 2)) and p < 1e-10


def _rules(tmp_path: Path, body: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n" + body)
    return RuleSet.load(path)


def _hour(
    hour: int, labels: dict[str, int], confidence: float = 0.9, source: str = "news"
) -> list[ScoredPost]:
    posts, i = [], 0
    for label, count in labels.items():
        score = {"negative": -0.7, "neutral": 0.0, "positive": 0.7}[label]
        for _ in range(count):
            record = scored(f"{source}-{hour}-{i}", hour * H + (1 + i) * M, ("ACME",), score,
                            label=label, confidence=confidence)
            posts.append(record.model_copy(update={"source": source}))
            i += 1
    return posts


CALM = {"negative": 2, "neutral": 6, "positive": 2}


def test_label_drift_fires_on_a_shifted_hour_and_resolves(
    storage: Storage, tmp_path: Path
) -> None:
    rules = _rules(
        tmp_path,
        "  - {name: drift, kind: model_health, check: label_drift, min_posts: 10,\n"
        "     min_reference_posts: 50, reference: 12h, cooldown: 1h}\n",
    )
    posts = [p for h in range(12) for p in _hour(h, CALM)]
    posts += _hour(12, {"negative": 9, "neutral": 1, "positive": 0})
    posts += _hour(13, CALM) + _hour(14, CALM)
    storage.save_scored(posts)
    (alert,) = evaluate_model_health(storage, rules)
    assert alert.id == "drift:news:1h:2024-03-04T12:00Z"
    assert alert.ticker == "news" and alert.value > 0.25 and alert.threshold == 0.25
    assert "PSI" in alert.explanation and "neg/neu/pos" in alert.explanation
    assert "over 120 in the previous 12 h" in alert.explanation
    assert len(alert.post_ids) == 5  # the most negative posts of the hour
    (stored,) = storage.alerts()
    assert stored.state == "resolved" and stored.resolved_at is not None
    assert evaluate_model_health(storage, rules) == []


def test_low_confidence_share_fires_per_source(storage: Storage, tmp_path: Path) -> None:
    rules = _rules(
        tmp_path,
        "  - {name: unsure, kind: model_health, check: low_confidence, min_posts: 10,\n"
        "     low_confidence: 0.5, max_share: 0.3, test: chi2}\n",
    )
    posts = [p for h in range(3) for p in _hour(h, CALM, source="news")]
    posts += [p for h in range(3) for p in _hour(h, CALM, source="social")]
    posts += _hour(3, CALM, confidence=0.4, source="social")  # the model is lost on social
    posts += _hour(5, CALM, source="news") + _hour(5, CALM, source="social")
    storage.save_scored(posts)
    (alert,) = evaluate_model_health(storage, rules)
    assert (alert.rule, alert.ticker, alert.value, alert.threshold) == ("unsure", "social", 1.0, 0.3)
    assert "10 of 10 posts (100%) scored with confidence < 0.5" in alert.explanation


def test_thin_windows_are_no_evidence(storage: Storage, tmp_path: Path) -> None:
    rules = _rules(
        tmp_path,
        "  - {name: unsure, kind: model_health, check: low_confidence, min_posts: 30}\n",
    )
    storage.save_scored(_hour(0, CALM, confidence=0.1) + _hour(3, CALM))
    assert evaluate_model_health(storage, rules) == []


def _unsure_hour(hour: int, low: int, source: str = "news") -> list[ScoredPost]:
    """Ten neutral posts in the hour, ``low`` of them scored with confidence 0.3."""
    return [
        scored(f"{source}-{hour}-u{i}", hour * H + (1 + i) * M, ("ACME",), 0.0,
               confidence=0.3 if i < low else 0.9).model_copy(update={"source": source})
        for i in range(10)
    ]


def _notices(storage: Storage) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The outbox events and (after a dispatch) the deliveries, as (alert id, kind), in order."""
    dispatch(storage)
    with storage.begin() as conn:
        events = conn.execute(
            sa.select(tables.outbox.c.alert_id, tables.outbox.c.kind).order_by(tables.outbox.c.id)
        ).all()
        deliveries = conn.execute(
            sa.select(tables.deliveries.c.alert_id, tables.deliveries.c.kind)
            .join(tables.outbox, tables.outbox.c.id == tables.deliveries.c.event_id)
            .order_by(tables.outbox.c.id)
        ).all()
    return [tuple(e) for e in events], [tuple(d) for d in deliveries]


def _seen(storage: Storage) -> tuple[object, ...]:
    (alert,) = storage.alerts()
    with storage.begin() as conn:
        last = conn.execute(sa.select(tables.alerts.c.last_window_start)).scalar_one()
    return alert.value, alert.explanation, alert.post_ids, alert.state, last, _notices(storage)


@pytest.mark.parametrize("passes", [1, 3])
def test_repeated_passes_judge_each_window_once(
    storage: Storage, tmp_path: Path, passes: int
) -> None:
    rules = _rules(
        tmp_path,
        "  - {name: unsure, kind: model_health, check: low_confidence, min_posts: 10,\n"
        "     low_confidence: 0.5, max_share: 0.3, explain_posts: 3}\n",
    )
    create_subscription(storage, channel="webhook", target="http://127.0.0.1:9/hook")
    storage.save_scored(
        [p for h in range(3) for p in _unsure_hour(h, 0)]
        + _unsure_hour(3, 6)
        + [scored("news-4-first", 4 * H + 10 * M).model_copy(update={"source": "news"})]
    )
    (fired,) = evaluate_model_health(storage, rules)
    before = _seen(storage)
    assert before[0] == 0.6 and before[3] == "firing" and before[4] == T0 + 3 * H
    assert before[5][0] == [(fired.id, "fired")] and before[5][1] == before[5][0]

    for _ in range(passes):
        assert evaluate_model_health(storage, rules) == []
    assert _seen(storage) == before  # no new data: no new value, evidence or notice
    # A late post in the hour already judged: the window stays judged as it was.
    storage.save_scored([scored("news-3-late", 3 * H + 50 * M, confidence=0.1)
                         .model_copy(update={"source": "news"})])
    assert evaluate_model_health(storage, rules) == []
    assert _seen(storage) == before

    # The next hour is worse (9 of its 11 posts) and a post after it closes it: one update.
    closing = scored("news-5-first", 5 * H + 10 * M).model_copy(update={"source": "news"})
    storage.save_scored(_unsure_hour(4, 9) + [closing])
    assert evaluate_model_health(storage, rules) == []
    value, explanation, post_ids, state, last, (events, deliveries) = _seen(storage)
    assert (value, state, last) == (pytest.approx(9 / 11), "firing", T0 + 4 * H)
    assert "9 of 11 posts (82%)" in explanation and all(p.startswith("news-4-u") for p in post_ids)
    assert events == before[5][0] + [(fired.id, "updated")] and deliveries == events
    assert evaluate_model_health(storage, rules) == []
    assert _seen(storage)[5] == (events, deliveries)


def test_a_rule_edit_replays_windows_without_extending_the_alert_again(
    storage: Storage, tmp_path: Path
) -> None:
    """Editing ``sources`` restarts the rule's cursors: windows the alert holds stay as they are."""
    rule = ("  - {name: unsure, kind: model_health, check: low_confidence, min_posts: 10,\n"
            "     low_confidence: 0.5, max_share: 0.3%s}\n")
    closing = scored("news-5-first", 5 * H + 10 * M).model_copy(update={"source": "news"})
    storage.save_scored([p for h in range(3) for p in _unsure_hour(h, 0)]
                        + _unsure_hour(3, 6) + _unsure_hour(4, 8) + [closing])
    (fired,) = evaluate_model_health(storage, _rules(tmp_path, rule % ""))
    before = _seen(storage)
    assert before[0] == 0.8 and before[4] == T0 + 4 * H
    assert before[5][0] == [(fired.id, "fired"), (fired.id, "updated")]
    assert evaluate_model_health(storage, _rules(tmp_path, rule % ", sources: [news]")) == []
    assert _seen(storage) == before

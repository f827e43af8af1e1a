"""Risk-event alerts: whole-word phrases, credible posts, copies never re-fire (stored)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from finpulse.schemas import ScoredPost
from finpulse.storage import Storage, tables
from finpulse.storage.outbox import dispatch
from finpulse.storage.subscriptions import create_subscription
from monitor.risk_events import evaluate_risk_events, matched_phrases, phrase_pattern
from monitor.rules import RuleSet
from tests.records import T0, scored

M = timedelta(minutes=1)
H = timedelta(hours=1)
PATTERN = phrase_pattern(("fraud", "chapter 11", "default", "probe"))


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("SEC opens FRAUD probe into Acme", ["fraud", "probe"]),
        ("Acme files for Chapter  11 protection", ["chapter 11"]),
        ("Acme fights fraudulent claims", []),
        ("Acme defaulted on bonds; default risk rises", ["default"]),
        ("$ACME: fraud-linked charges", ["fraud"]),
        ("chapter 110 of the manual", []),
    ],
)
def test_phrases_match_whole_words_in_any_case(text: str, found: list[str]) -> None:
    assert matched_phrases(PATTERN, text) == found


def _rules(tmp_path: Path, extra: str = "") -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - name: risk\n    kind: risk_event\n"
        "    phrases: [fraud, bankruptcy, recall]\n    min_confidence: 0.6\n"
        "    resolve_after: 12h\n" + extra
    )
    return RuleSet.load(path)


def post(
    post_id: str,
    at: timedelta,
    text: str,
    *,
    score: float = -0.8,
    confidence: float = 0.9,
    label: str | None = None,
    tickers: tuple[str, ...] = ("ACME",),
    cluster: str | None = None,
    url: str | None = None,
) -> ScoredPost:
    record = scored(
        post_id, at, tickers, score, label=label, confidence=confidence, text=text
    )
    return record.model_copy(update={"cluster_id": cluster or post_id, "url": url})


def test_the_first_credible_post_fires_with_its_link(storage: Storage, tmp_path: Path) -> None:
    storage.save_scored([
        post("calm", 1 * M, "Acme reports steady quarter", score=0.3),
        post("weak", 2 * M, "Acme fraud rumours", confidence=0.4),  # not confident enough
        post("neutral", 3 * M, "Explainer: what fraud charges mean", score=0.0, label="neutral"),
        post("real", 5 * M, "SEC charges Acme with accounting fraud",
             url="https://example.com/acme-fraud"),
    ])
    (alert,) = evaluate_risk_events(storage, _rules(tmp_path))
    assert alert.id == "risk:ACME:1m:2024-03-04T00:05Z"
    assert (alert.rule, alert.ticker, alert.state, alert.severity) == (
        "risk", "ACME", "firing", "critical"
    )
    assert alert.fired_at == T0 + 5 * M
    assert alert.post_ids == ("real",)
    assert "1 credible story naming 'fraud'" in alert.explanation
    assert "confidence 0.90" in alert.explanation
    assert "<https://example.com/acme-fraud>" in alert.explanation
    assert evaluate_risk_events(storage, _rules(tmp_path)) == []  # idempotent
    assert len(storage.alerts()) == 1


def test_copies_join_the_alert_and_new_stories_raise_its_value(
    storage: Storage, tmp_path: Path
) -> None:
    rules = _rules(tmp_path)
    storage.save_scored([post("first", 5 * M, "Acme accused of fraud by short seller")])
    (alert,) = evaluate_risk_events(storage, rules)
    assert alert.value == 1.0 and "[" not in alert.explanation  # no copies yet
    storage.save_scored([
        post("copy1", 7 * M, "RT @x: Acme accused of fraud by short seller", cluster="first"),
        post("copy2", 8 * M, "Acme accused of fraud by short seller (wire)", cluster="first"),
        post("second", 30 * M, "Acme recall of 2 million widgets", score=-0.9),
    ])
    assert evaluate_risk_events(storage, rules) == []
    (stored,) = storage.alerts()
    assert stored.value == 2.0
    assert stored.post_ids == ("first", "second")
    assert "[3 copies]" in stored.explanation
    assert "'fraud', 'recall'" in stored.explanation


def test_a_copy_after_the_alert_resolved_does_not_fire_again(
    storage: Storage, tmp_path: Path
) -> None:
    rules = _rules(tmp_path)
    storage.save_scored([post("first", 5 * M, "Acme bankruptcy filing expected")])
    evaluate_risk_events(storage, rules)
    # 13 h later (resolve_after 12 h) a copy resurfaces, then a genuinely new story.
    storage.save_scored([
        post("late-copy", 13 * H, "Acme bankruptcy filing expected - repost", cluster="first"),
        post("new", 14 * H, "Acme recall widens to Europe"),
    ])
    fired = evaluate_risk_events(storage, rules)
    assert [a.post_ids for a in fired] == [("new",)]
    states = {a.id: (a.state, a.resolved_at) for a in storage.alerts()}
    assert states["risk:ACME:1m:2024-03-04T00:05Z"] == ("resolved", T0 + 5 * M + 12 * H)
    assert states["risk:ACME:1m:2024-03-04T14:00Z"] == ("firing", None)


def test_each_ticker_of_a_post_gets_its_own_alert_and_sources_filter(
    storage: Storage, tmp_path: Path
) -> None:
    storage.save_scored([post("both", 5 * M, "Acme and Beta in fraud probe", tickers=("ACME", "BETA"))])
    social = post("tweet", 6 * M, "Gamma fraud!!!", tickers=("GAMMA",))
    storage.save_scored([social.model_copy(update={"source": "social"})])
    fired = evaluate_risk_events(storage, _rules(tmp_path, "    sources: [news]\n"))
    assert sorted(a.ticker for a in fired) == ["ACME", "BETA"]


def test_the_cursor_reads_only_new_scores(storage: Storage, tmp_path: Path) -> None:
    rules = _rules(tmp_path)
    storage.save_scored([post("a", 5 * M, "Acme fraud", tickers=("ACME",))])
    evaluate_risk_events(storage, rules)
    with storage.begin() as conn:
        cursor = conn.execute(
            sa.select(tables.rule_cursors.c.closed_until).where(tables.rule_cursors.c.rule == "risk")
        ).scalar_one()
    storage.save_scored([post("b", 6 * M, "Beta fraud", tickers=("BETA",))])
    (alert,) = evaluate_risk_events(storage, rules)
    assert alert.ticker == "BETA"
    with storage.begin() as conn:
        moved = conn.execute(
            sa.select(tables.rule_cursors.c.closed_until).where(tables.rule_cursors.c.rule == "risk")
        ).scalar_one()
    assert moved >= cursor


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
    return alert.value, alert.explanation, alert.post_ids, alert.state, _notices(storage)


@pytest.mark.parametrize("passes", [1, 3])
def test_repeated_passes_count_each_story_once(
    storage: Storage, tmp_path: Path, passes: int
) -> None:
    """Every pass re-reads the scores of the last minutes: nothing it has counted counts again."""
    rules = _rules(tmp_path)
    create_subscription(storage, channel="webhook", target="http://127.0.0.1:9/hook")
    storage.save_scored([post("s0", 5 * M, "Acme accused of fraud by short seller")])
    evaluate_risk_events(storage, rules)
    # Eleven more stories (more than the five posts the evidence keeps) and a copy of one.
    storage.save_scored(
        [post(f"s{i}", (5 + i) * M, f"Acme recall number {i} of model {i * 7}",
              score=-0.5 - i / 100) for i in range(1, 12)]
        + [post("s3-copy", 20 * M, "RT @x: Acme recall number 3 of model 21", cluster="s3")]
    )
    evaluate_risk_events(storage, rules)
    before = _seen(storage)
    assert before[0] == 12.0 and len(before[2]) == 5
    assert "12 credible stories" in before[1]
    assert [kind for _, kind in before[4][0]] == ["fired", "updated"]
    assert before[4][1] == before[4][0]  # one subscriber, one delivery per event

    for _ in range(passes):
        assert evaluate_risk_events(storage, rules) == []
    assert _seen(storage) == before  # no new data: no new value, evidence or notice

    storage.save_scored([post("s12", 40 * M, "Acme probe: fraud charges widen", score=-0.95)])
    assert evaluate_risk_events(storage, rules) == []
    value, explanation, post_ids, state, (events, deliveries) = _seen(storage)
    assert value == 13.0 and "13 credible stories" in explanation
    assert "s12" in post_ids and state == "firing"
    assert events == before[4][0] + [("risk:ACME:1m:2024-03-04T00:05Z", "updated")]
    assert deliveries == events
    assert evaluate_risk_events(storage, rules) == []
    assert _seen(storage)[4] == (events, deliveries)

    # A copy of a story the explanation shows: its count is refreshed once, the value stays.
    storage.save_scored([post("s0-copy", 41 * M, "RT: Acme accused of fraud by short seller",
                              cluster="s0")])
    evaluate_risk_events(storage, rules)
    evaluate_risk_events(storage, rules)
    value, explanation, _, _, (events, _) = _seen(storage)
    assert value == 13.0 and '"Acme accused of fraud by short seller" [2 copies]' in explanation
    assert [kind for _, kind in events] == ["fired", "updated", "updated", "updated"]
    # A copy of a story counted but not shown changes nothing anyone sees: no event.
    storage.save_scored([post("s2-copy", 42 * M, "Acme recall number 2 of model 14 (wire)",
                              cluster="s2")])
    evaluate_risk_events(storage, rules)
    assert _seen(storage)[:2] == (value, explanation) and len(_seen(storage)[4][0]) == 4

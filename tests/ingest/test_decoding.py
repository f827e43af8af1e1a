"""decode_post: every rejection reason, and what a valid message becomes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from finpulse.errors import MalformedMessage
from finpulse.schemas import Post
from ingest.decoding import REASONS, decode_post, parse_timestamp
from ingest.entities import TickerExtractor

EXTRACTOR = TickerExtractor({"Boeing": "BA", "Apple": "AAPL"}, ["BA", "AAPL"])


def message(**fields: object) -> bytes:
    base: dict[str, object] = {
        "id": "n-1",
        "source": "news",
        "text": "Shares were flat.",
        "published_at": "2024-05-01T13:30:00Z",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


# The consume time of every decode in this module: 13:30:00 + 5 minutes of tolerance.
NOW = datetime(2024, 5, 1, 13, 30, tzinfo=timezone.utc)


def decode(value: bytes | None, max_text_chars: int = 100) -> Post:
    return decode_post(value, max_text_chars=max_text_chars, extractor=EXTRACTOR, now=NOW)


CASES = [
    ("not_utf8", b'{"id": "\xff\xfe"}', "byte"),
    ("not_utf8", "café".encode("latin-1"), "byte"),
    ("not_json", b"", "no value"),
    ("not_json", None, "no value"),
    ("not_json", b"{'id': 1}", "line 1"),
    ("not_json", b"hello world", "line 1"),
    ("invalid", b"[1, 2]", "JSON object"),
    ("invalid", message(text=...), "text"),
    ("invalid", message(text=5), "text"),
    ("invalid", message(id=...), "id"),
    ("invalid", message(source=...), "source"),
    ("invalid", message(published_at=...), "published_at"),
    ("invalid", message(source="News Wire"), "source"),
    ("invalid", message(tickers="AAPL"), "tickers"),
    ("invalid", message(tickers=["not a ticker"]), "tickers"),
    ("invalid", message(colour="red"), "colour"),
    ("empty_text", message(text=""), "blank"),
    ("empty_text", message(text=" \n\t "), "blank"),
    ("oversized", message(text="x" * 101), "text: 101"),
    ("oversized", message(title="x" * 101), "title: 101"),
    ("oversized", b" " * 2_000_000, "bytes"),
    ("bad_timestamp", message(published_at="2024-05-01T13:30:00"), "no UTC offset"),
    ("bad_timestamp", message(published_at="2024-05-01"), "no UTC offset"),
    ("bad_timestamp", message(published_at="yesterday"), "yesterday"),
    ("bad_timestamp", message(published_at="2024-13-01T00:00:00Z"), "2024-13-01"),
    ("bad_timestamp", message(published_at=1714570200), "ISO-8601"),
    ("bad_timestamp", message(published_at="1714570200"), "ISO-8601"),
    ("bad_timestamp", message(published_at="0001-01-01T00:00:00+14:00"), "out of range in UTC"),
    ("bad_timestamp", message(published_at="9999-12-31T23:59:59-14:00"), "out of range in UTC"),
    ("too_deep", b"[" * 20_000 + b"]" * 20_000, "nested"),
    ("too_deep", b'{"id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "nested"),
    ("bad_characters", message(text="before\u0000after"), "text: character U+0000 at position 6"),
    ("bad_characters", (b'{"id": "n-1", "source": "news", "text": "x\\ud800", '
                        b'"published_at": "2024-05-01T13:30:00Z"}'), "U+D800"),
    ("bad_characters", message(title="\u0000"), "title"),
    ("bad_characters", message(tickers=["BA\u0000"]), "tickers"),
    ("future_timestamp", message(published_at="2024-05-01T13:36:00Z"), "ahead of"),
]


@pytest.mark.parametrize(("reason", "value", "detail"), CASES)
def test_malformed_messages_raise_with_reason_and_detail(
    reason: str, value: bytes | None, detail: str
) -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode(value)
    assert caught.value.reason == reason
    assert detail in caught.value.detail
    assert isinstance(caught.value, ValueError)


def test_every_reason_is_covered() -> None:
    assert {case[0] for case in CASES} == set(REASONS)


def test_valid_message_keeps_its_fields_and_tickers() -> None:
    post = decode(message(title="Q1", tickers=["$msft", "AAPL"], lang="en", author="wire"))
    assert post.id == "n-1" and post.source == "news" and post.title == "Q1"
    assert post.tickers == ("MSFT", "AAPL")  # given tickers win over extraction
    assert post.published_at == datetime(2024, 5, 1, 13, 30, tzinfo=timezone.utc)


def test_missing_or_empty_tickers_are_extracted_from_title_and_text() -> None:
    assert decode(message(title="Boeing slides", text="Apple gains")).tickers == ("BA", "AAPL")
    assert decode(message(text="Apple gains", tickers=[])).tickers == ("AAPL",)
    assert decode(message(text="Nothing to see")).tickers == ()


def test_default_extractor_is_the_bundled_list() -> None:
    post = decode_post(message(text="Wells Fargo beats"), max_text_chars=100)
    assert post.tickers == ("WFC",)


def test_offsets_are_kept() -> None:
    post = decode(message(published_at="2024-05-01T15:30:00+02:00"))
    assert post.published_at.utcoffset() == timedelta(hours=2)
    assert post.published_at == datetime(2024, 5, 1, 13, 30, tzinfo=timezone.utc)


def test_text_at_the_limit_is_accepted() -> None:
    assert len(decode(message(text="y" * 100)).text) == 100


def test_parse_timestamp_accepts_z_and_fractions() -> None:
    parsed = parse_timestamp("2024-05-01T13:30:00.123456Z")
    assert parsed.microsecond == 123456 and parsed.utcoffset() == timedelta(0)


def test_future_tolerance_is_inclusive_and_configurable() -> None:
    assert decode(message(published_at="2024-05-01T13:35:00Z")).id == "n-1"
    late = message(published_at="2024-05-01T14:29:00Z")
    with pytest.raises(MalformedMessage, match="future_timestamp"):
        decode(late)
    assert decode_post(late, max_text_chars=100, extractor=EXTRACTOR, now=NOW,
                       future_tolerance=timedelta(hours=1)).id == "n-1"
    # Without a consume time (batch tools, replay) there is no future check.
    assert decode_post(late, max_text_chars=100, extractor=EXTRACTOR).id == "n-1"


def test_max_message_bytes_overrides_the_derived_bound() -> None:
    with pytest.raises(MalformedMessage, match="oversized") as caught:
        decode_post(message(text="x" * 50), max_text_chars=100, max_message_bytes=64)
    assert "limit 64" in caught.value.detail


def test_a_surrogate_pair_is_one_valid_character() -> None:
    raw = b'{"id": "n-1", "source": "news", "text": "up \\ud83d\\ude80", "published_at": "2024-05-01T13:30:00Z"}'
    assert decode(raw).text == "up \U0001F680"

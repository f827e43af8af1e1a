"""Raw message bytes -> ``Post``, or ``MalformedMessage`` saying why not.

Reasons (``MalformedMessage.reason``):

``not_utf8``       the bytes are not UTF-8
``not_json``       no value, or not JSON
``invalid``        not a JSON object, a field missing, of the wrong type, or unknown
                   (``detail`` starts with the field name)
``empty_text``     ``text`` is empty or only whitespace
``oversized``      ``text`` or ``title`` is longer than ``max_text_chars`` (or the whole
                   message is far too large to be a post)
``bad_timestamp``  ``published_at`` is not an ISO-8601 string with a UTC offset (naive
                   timestamps are rejected rather than guessed to be UTC), or its UTC value
                   falls outside years 1-9999 (``0001-01-01T00:00:00+14:00``)
``too_deep``       JSON nested deeper than Python's parser can follow (``RecursionError``)
``bad_characters`` a string holds a NUL (``\\u0000``) or a lone UTF-16 surrogate
                   (``\\ud800``): characters PostgreSQL cannot store in ``text``. Refused, not
                   sanitised, so a stored text is always the text that was sent
``future_timestamp`` ``published_at`` is more than the tolerance ahead of the time the
                   message is consumed (only when the caller passes ``now``)

The consumer adds ``internal`` for an unexpected exception while decoding one message,
and the scorer adds ``conflicting_id``, ``db_refused`` and ``internal`` for what a later
step refuses (see ``finpulse.services.validation``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import AwareDatetime, TypeAdapter, ValidationError

from finpulse.errors import MalformedMessage
from finpulse.schemas import Post
from ingest.entities import TickerExtractor

REASONS = (
    "not_utf8", "not_json", "too_deep", "invalid", "bad_characters", "empty_text", "oversized",
    "bad_timestamp", "future_timestamp",
)

_AWARE = TypeAdapter(AwareDatetime)
# pydantic would read "1700000000" as a Unix time; the contract is ISO-8601 only.
_NUMERIC = re.compile(r"^\s*[-+]?\d+(?:\.\d*)?\s*$")
_RAW_SLACK_BYTES = 64 * 1024
# NUL and lone surrogates: valid in a JSON string, refused by PostgreSQL (and by UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_STRING_FIELDS = ("id", "source", "text", "title", "url", "author", "lang")


def parse_timestamp(value: Any) -> AwareDatetime:
    """Parse ``published_at``: an ISO-8601 string with a UTC offset (``Z`` or ``+hh:mm``).

    Args:
        value: the JSON value of the field.

    Returns:
        A timezone-aware datetime.

    Raises:
        MalformedMessage: ``bad_timestamp``, with the offending value in the detail.
    """
    if not isinstance(value, str) or _NUMERIC.match(value):
        raise MalformedMessage(
            "bad_timestamp", f"published_at must be an ISO-8601 string, got {value!r:.80}"
        )
    try:
        parsed = _AWARE.validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "timezone_aware":
            detail = f"published_at has no UTC offset: {value!r:.80}"
        else:
            detail = f"published_at {value!r:.80}: {error['msg']}"
        raise MalformedMessage("bad_timestamp", detail) from exc
    try:
        # Every later step (storage, windows) works in UTC; 0001-01-01T00:00+14:00 has no UTC value.
        parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError) as exc:
        raise MalformedMessage(
            "bad_timestamp", f"published_at {value!r:.80} is out of range in UTC"
        ) from exc
    return parsed


def _check_characters(data: dict[str, Any]) -> None:
    values = [(name, data.get(name)) for name in _STRING_FIELDS]
    tickers = data.get("tickers")
    if isinstance(tickers, list):
        values += [("tickers", t) for t in tickers]
    for name, value in values:
        if isinstance(value, str):
            found = _UNSTORABLE.search(value)
            if found:
                raise MalformedMessage(
                    "bad_characters",
                    f"{name}: character U+{ord(found.group()):04X} at position {found.start()}"
                    " cannot be stored",
                )


def _check_text(data: dict[str, Any], max_text_chars: int) -> None:
    if "text" not in data or data["text"] is None:
        raise MalformedMessage("invalid", "text: field required")
    text = data["text"]
    if not isinstance(text, str):
        raise MalformedMessage("invalid", f"text: must be a string, got {type(text).__name__}")
    if not text.strip():
        raise MalformedMessage("empty_text", "text is empty or blank")
    for field in ("text", "title"):
        value = data.get(field)
        if isinstance(value, str) and len(value) > max_text_chars:
            raise MalformedMessage(
                "oversized", f"{field}: {len(value)} characters (limit {max_text_chars})"
            )


def _validation_to_malformed(exc: ValidationError) -> MalformedMessage:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "(record)"
    if error["type"] == "extra_forbidden":
        return MalformedMessage("invalid", f"{field}: unknown field")
    if error["loc"] and error["loc"][0] == "published_at":
        return MalformedMessage("bad_timestamp", f"{field}: {error['msg']}")
    return MalformedMessage("invalid", f"{field}: {error['msg']}")


def decode_post(
    value: bytes | None,
    *,
    max_text_chars: int,
    extractor: TickerExtractor | None = None,
    max_message_bytes: int | None = None,
    now: datetime | None = None,
    future_tolerance: timedelta = timedelta(minutes=5),
) -> Post:
    """Decode and validate one raw-topic message into a ``Post``.

    When the message has no tickers (absent or empty), they are extracted from the
    title and text.

    Args:
        value: the message value as received.
        max_text_chars: the longest ``text`` (and ``title``) accepted, in characters.
        extractor: finds tickers; ``None`` uses the bundled S&P 500 extractor.
        max_message_bytes: the largest message accepted, in bytes; ``None``: a bound
            derived from ``max_text_chars``.
        now: the consume time; when given, a post dated more than ``future_tolerance``
            after it is refused (``future_timestamp``).
        future_tolerance: how far ahead of ``now`` a post may be dated.

    Returns:
        The validated post.

    Raises:
        MalformedMessage: the message cannot become a post; ``reason`` is one of
            ``REASONS`` and ``detail`` explains (naming the field where there is one).
    """
    if not value:
        raise MalformedMessage("not_json", "the message has no value")
    # JSON escapes take at most 12 bytes per character; anything far beyond that is not a post.
    limit = max_message_bytes if max_message_bytes is not None else 12 * max_text_chars + _RAW_SLACK_BYTES
    if len(value) > limit:
        raise MalformedMessage("oversized", f"message of {len(value)} bytes (limit {limit})")
    try:
        raw = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage("not_utf8", f"invalid UTF-8 at byte {exc.start}: {exc.reason}") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedMessage(
            "not_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise MalformedMessage("too_deep", "JSON nested too deeply to parse") from exc
    if not isinstance(data, dict):
        raise MalformedMessage("invalid", f"expected a JSON object, got {type(data).__name__}")
    _check_characters(data)
    _check_text(data, max_text_chars)
    if "published_at" not in data or data["published_at"] is None:
        raise MalformedMessage("invalid", "published_at: field required")
    data["published_at"] = parse_timestamp(data["published_at"])
    if now is not None and data["published_at"] > now + future_tolerance:
        raise MalformedMessage(
            "future_timestamp",
            f"published_at {data['published_at'].isoformat()} is more than "
            f"{future_tolerance.total_seconds():.0f} s ahead of {now.isoformat(timespec='seconds')}",
        )
    tickers = data.get("tickers")
    if tickers is not None and not (
        isinstance(tickers, list) and all(isinstance(t, str) for t in tickers)
    ):
        raise MalformedMessage("invalid", "tickers: must be a list of strings")
    try:
        post = Post.model_validate(data)
    except ValidationError as exc:
        raise _validation_to_malformed(exc) from exc
    except RecursionError as exc:  # a deeply nested value in some field
        raise MalformedMessage("too_deep", "a field is nested too deeply to validate") from exc
    if not post.tickers:
        finder = extractor if extractor is not None else TickerExtractor.default()
        found = finder.extract(f"{post.title}\n{post.text}" if post.title else post.text)
        if found:
            post = post.model_copy(update={"tickers": found})
    return post

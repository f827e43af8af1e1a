"""Parsing and validating what clients send: times, text without NUL, tickers.

Shared by the API and the CLI so both accept the same spellings. Errors name the
parameter (``ValueError("since: ...")``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

_RELATIVE = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

TICKER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,9}$"
NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"


def clean_text(value: str) -> str:
    """Refuse text a database cannot store: NUL characters, unpaired surrogates.

    Raises:
        ValueError: the text contains one.
    """
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text") from exc
    return value


Text = Annotated[str, AfterValidator(clean_text)]
Ticker = Annotated[str, StringConstraints(pattern=TICKER_PATTERN)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


def parse_time(value: str, name: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date/time (UTC if no offset) or a duration back from now (``7d``, ``12h``).

    Args:
        value: what the user wrote.
        name: the parameter's name, for the error message.
        now: the reference time of relative values (default: the current time).

    Raises:
        ValueError: neither form, or out of range (the message starts with ``name``).
    """
    text = value.strip()
    match = _RELATIVE.match(text)
    try:
        if match:
            amount, unit = int(match.group(1)), _UNITS[match.group(2)]
            return (now or datetime.now(timezone.utc)) - timedelta(**{unit: amount})
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        parsed = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise ValueError(
            f"{name}: expected an ISO 8601 time (2026-11-24T10:00:00Z) or a duration like "
            f"7d, 12h, 30m; got {value[:40]!r}"
        ) from exc


def parse_window(value: str) -> timedelta:
    """A duration such as ``1h`` or ``30m`` (for ``--window``).

    Raises:
        ValueError: not a positive duration.
    """
    match = _RELATIVE.match(value.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"window: expected a duration like 1m, 5m, 1h, 1d; got {value!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})

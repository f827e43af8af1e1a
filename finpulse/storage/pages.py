"""Cursor pagination: every list finpulse serves is read in pages ordered by a unique key.

A cursor is the sort key of the last item of a page, JSON in URL-safe base64, opaque to
clients. The next page is everything strictly after it in the list's order (a keyset
query: no OFFSET, so pages stay consistent while rows are added and cost the same deep in
the list). A cursor that does not decode is the caller's error (``ValueError``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a list and the cursor of the next one (None on the last page)."""

    items: list[T] = field(default_factory=list)
    next_cursor: str | None = None


def encode_cursor(values: Sequence[Any]) -> str:
    """The opaque cursor of a sort key (datetimes as ISO 8601)."""
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    raw = json.dumps(plain, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, kinds: Sequence[type]) -> list[Any]:
    """The sort key inside ``cursor``, each part converted to its kind.

    Args:
        cursor: what ``encode_cursor`` returned.
        kinds: the type of each part (``datetime``, ``str``, ``int``).

    Raises:
        ValueError: the cursor is not one this list produced.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValueError("not a cursor this list produced") from exc
    if not isinstance(values, list) or len(values) != len(kinds):
        raise ValueError("not a cursor this list produced")
    out: list[Any] = []
    for value, kind in zip(values, kinds):
        if kind is datetime:
            if not isinstance(value, str):
                raise ValueError("not a cursor this list produced")
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise ValueError("not a cursor this list produced")
            out.append(parsed)
        elif kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError("not a cursor this list produced")
            out.append(value)
        else:
            if not isinstance(value, str) or "\x00" in value:
                raise ValueError("not a cursor this list produced")
            out.append(value)
    return out


def after(columns: Sequence[sa.ColumnElement[Any]], values: Sequence[Any], descending: bool) -> Any:
    """The keyset condition "strictly after ``values`` in the order of ``columns``".

    Written as nested OR/AND rather than a row-value comparison so every dialect binds
    each value with its column's type.
    """
    condition: Any = None
    for i in reversed(range(len(columns))):
        column, value = columns[i], values[i]
        strict = column < value if descending else column > value
        condition = strict if condition is None else sa.or_(strict, sa.and_(column == value, condition))
    return condition


def paginate(rows: Sequence[Any], limit: int, key: Any) -> tuple[list[Any], str | None]:
    """Cut ``limit + 1`` fetched rows to a page; the cursor comes from the last row kept."""
    if len(rows) > limit:
        kept = list(rows[:limit])
        return kept, encode_cursor(key(kept[-1]))
    return list(rows), None

"""Per-message checks of the scorer that need more than one message: id conflicts, bisecting.

Re-published ids: **first write wins.** A post id names one post for ever. The same id
with the same content (a redelivery after a crash, a replay) is stored once, silently; the
same id with different content (another text, other tickers, another time, ...) is refused
to the DLQ with the reason ``conflicting_id`` and the differing fields in the detail,
whether the first version is already stored or came earlier in the same batch. The stored
post therefore always matches its text, its tickers and its score.

``run_bisecting`` isolates the messages that make a batch operation fail with a
message-level fault (a row the database refuses, an input that crashes the model): the
batch is split in halves until each failing message stands alone, so one bad message
costs a few extra round trips and never the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timezone
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa

from finpulse.errors import MalformedMessage, StorageError
from finpulse.schemas import Post
from finpulse.services.policy import classify
from finpulse.storage import Storage
from finpulse.storage import tables as t
from ingest.consumer import ConsumedPost

T = TypeVar("T")
R = TypeVar("R")

CONTENT_FIELDS = ("source", "text", "title", "url", "author", "published_at", "tickers", "lang")
_LOOKUP_CHUNK = 500


def content(post: Post | dict[str, Any]) -> dict[str, Any]:
    """The fields that make two versions of one post id the same post (normalised)."""
    get = post.get if isinstance(post, dict) else lambda name: getattr(post, name)
    values = {name: get(name) for name in CONTENT_FIELDS}
    values["published_at"] = values["published_at"].astimezone(timezone.utc)
    values["tickers"] = tuple(values["tickers"] or ())
    return values


def _differs(first: dict[str, Any], other: dict[str, Any]) -> list[str]:
    return [name for name in CONTENT_FIELDS if first[name] != other[name]]


class Split(NamedTuple):
    """What ``split_conflicts`` found in a batch."""

    accepted: list[ConsumedPost]
    """The posts to store (repeats of identical content included: storing is idempotent)."""
    refused: list[tuple[ConsumedPost, MalformedMessage]]
    """The refused posts, each with a ``conflicting_id`` error."""
    checked: frozenset[str]
    """Ids of accepted posts already stored with the same content: ``Storage.save_scored``
    need not read them again (``checked=``)."""


def split_conflicts(storage: Storage, posts: Sequence[ConsumedPost]) -> Split:
    """Separate re-published ids with different content from the rest (first write wins).

    The one read of the batch's stored posts: its result goes on to ``save_scored``.

    Args:
        storage: the database holding the posts stored so far.
        posts: a batch's valid posts, in order.

    Returns:
        The accepted posts, the refused ones, and the accepted ids found stored.

    Raises:
        StorageError: the database could not be read.
    """
    if not posts:
        return Split([], [], frozenset())
    ids = list(dict.fromkeys(c.post.id for c in posts))
    stored: dict[str, dict[str, Any]] = {}
    with storage.begin() as conn:
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            query = sa.select(*(t.posts.c[name] for name in ("id", *CONTENT_FIELDS))).where(
                t.posts.c.id.in_(ids[start : start + _LOOKUP_CHUNK])
            )
            for row in conn.execute(query).mappings():
                stored[row["id"]] = content(dict(row))
    first: dict[str, dict[str, Any]] = {}
    accepted: list[ConsumedPost] = []
    refused: list[tuple[ConsumedPost, MalformedMessage]] = []
    for consumed in posts:
        mine = content(consumed.post)
        known = stored.get(consumed.post.id) or first.get(consumed.post.id)
        where = "stored" if consumed.post.id in stored else "earlier in the batch"
        fields = _differs(known, mine) if known is not None else []
        if fields:
            refused.append((consumed, MalformedMessage(
                "conflicting_id",
                f"id {consumed.post.id!r:.80} is already {where} with another "
                f"{', '.join(fields)} (first write wins)",
            )))
            continue
        first.setdefault(consumed.post.id, mine)
        accepted.append(consumed)
    return Split(accepted, refused, frozenset(c.post.id for c in accepted if c.post.id in stored))


def as_dead_letter(exc: BaseException) -> MalformedMessage:
    """The DLQ entry for a message-level fault of one message."""
    if isinstance(exc, MalformedMessage):
        return exc
    if isinstance(exc, StorageError):
        return MalformedMessage("db_refused", str(exc)[:500])
    return MalformedMessage.internal(exc)


def run_bisecting(
    items: Sequence[T], action: Callable[[Sequence[T]], R]
) -> tuple[list[R], list[tuple[T, BaseException]]]:
    """Run ``action`` on ``items``, splitting around message-level faults.

    Args:
        items: the batch.
        action: the work on a sub-batch; raises on failure.

    Returns:
        The results of the sub-batches that succeeded, and each item that fails on its
        own with its exception.

    Raises:
        Any transient or fatal fault of ``action``, unchanged (the caller retries or stops;
        sub-batches done so far must be idempotent).
    """
    if not items:
        return [], []
    try:
        return [action(items)], []
    except Exception as exc:
        if classify(exc) != "message":
            raise
        if len(items) == 1:
            return [], [(items[0], exc)]
    middle = len(items) // 2
    done_left, failed_left = run_bisecting(items[:middle], action)
    done_right, failed_right = run_bisecting(items[middle:], action)
    return done_left + done_right, failed_left + failed_right

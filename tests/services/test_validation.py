"""First write wins for re-published ids; bisecting a batch around the messages that fail."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from finpulse.errors import MalformedMessage, StorageError
from finpulse.services.validation import as_dead_letter, run_bisecting, split_conflicts
from finpulse.storage import Storage, tables
from ingest.consumer import ConsumedPost
from tests.records import scored


def stored_tickers(storage: Storage, post_id: str) -> tuple[list[str], list[str]]:
    with storage.begin() as conn:
        row = conn.execute(sa.select(tables.posts.c.tickers).where(tables.posts.c.id == post_id)).scalar_one()
        linked = conn.execute(
            sa.select(tables.post_tickers.c.ticker).where(tables.post_tickers.c.post_id == post_id)
        ).scalars().all()
    return sorted(row), sorted(linked)


def test_save_scored_keeps_the_first_version_of_an_id(storage: Storage) -> None:
    first = scored("p-1", timedelta(0), ("AAPL",), text="Apple beats")
    assert storage.save_scored([first]) == 1
    # Another post under the same id, even under another model version: nothing of it is stored.
    other = scored("p-1", timedelta(0), ("MSFT",), text="Microsoft misses", version="v2")
    assert storage.save_scored([other]) == 0
    assert stored_tickers(storage, "p-1") == (["AAPL"], ["AAPL"])
    assert storage.count_scores() == 1
    # The same post again (a redelivery) under a new model version is a new score.
    assert storage.save_scored([first.model_copy(update={"model_version": "v2"})]) == 1


def test_save_scored_within_one_batch_keeps_the_first(storage: Storage) -> None:
    first = scored("p-1", timedelta(0), ("AAPL",), text="Apple beats")
    other = scored("p-1", timedelta(0), ("MSFT",), text="Apple beats", version="v2")
    assert storage.save_scored([first, other]) == 1
    assert stored_tickers(storage, "p-1") == (["AAPL"], ["AAPL"])


def consumed(post, offset: int = 0) -> ConsumedPost:
    return ConsumedPost(post, "news", 0, offset, 0)


def test_split_conflicts_refuses_other_content_under_a_known_id(storage: Storage) -> None:
    storage.save_scored([scored("p-1", timedelta(0), ("AAPL",), text="Apple beats")])
    batch = [
        consumed(scored("p-1", timedelta(0), ("AAPL",), text="Apple beats"), 0),   # redelivery
        consumed(scored("p-1", timedelta(0), ("MSFT",), text="Apple beats"), 1),   # other tickers
        consumed(scored("p-2", timedelta(0), ("BA",), text="Boeing"), 2),
        consumed(scored("p-2", timedelta(minutes=1), ("BA",), text="Boeing"), 3),  # other time
        consumed(scored("p-2", timedelta(0), ("BA",), text="Boeing"), 4),          # same again
    ]
    accepted, refused, checked = split_conflicts(storage, batch)
    assert [c.offset for c in accepted] == [0, 2, 4]
    assert checked == {"p-1"}  # stored, same content: save_scored need not read it again
    assert [(c.offset, e.reason) for c, e in refused] == [(1, "conflicting_id"), (3, "conflicting_id")]
    assert "tickers" in refused[0][1].detail and "already stored" in refused[0][1].detail
    assert "published_at" in refused[1][1].detail and "earlier in the batch" in refused[1][1].detail


def test_a_redelivered_batch_reads_its_stored_posts_once(storage: Storage) -> None:
    first = [scored(f"p-{i}", timedelta(minutes=i), ("AAPL",), text=f"Apple {i}") for i in range(5)]
    assert storage.save_scored(first) == 5
    reads: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM posts" in statement:
            reads.append(statement)

    sa.event.listen(storage.engine, "before_cursor_execute", count)
    try:
        again = [consumed(post, i) for i, post in enumerate(first)]
        again.append(consumed(scored("p-9", timedelta(0), ("BA",), text="Boeing"), 5))
        accepted, refused, checked = split_conflicts(storage, again)
        assert (len(accepted), refused, checked) == (6, [], {f"p-{i}" for i in range(5)})
        new = storage.save_scored([c.post for c in accepted], checked=checked)
    finally:
        sa.event.remove(storage.engine, "before_cursor_execute", count)
    assert new == 1
    assert len(reads) == 1, reads  # split_conflicts' read; save_scored trusts it


def test_save_scored_still_compares_ids_nobody_checked(storage: Storage) -> None:
    """An id stored after split_conflicts read (another scorer, say) is compared by save_scored."""
    storage.save_scored([scored("p-1", timedelta(0), ("AAPL",), text="Apple beats")])
    other = scored("p-1", timedelta(0), ("MSFT",), text="Microsoft misses")
    assert storage.save_scored([other], checked={"p-2"}) == 0
    assert stored_tickers(storage, "p-1") == (["AAPL"], ["AAPL"])


def test_run_bisecting_isolates_each_failing_item() -> None:
    calls: list[list[int]] = []

    def action(items):
        calls.append(list(items))
        bad = [i for i in items if i in (3, 6)]
        if bad:
            raise StorageError(f"refused {bad}", transient=False)
        return len(items)

    done, failed = run_bisecting(list(range(8)), action)
    assert sum(done) == 6
    assert [(item, str(exc)) for item, exc in failed] == [(3, "refused [3]"), (6, "refused [6]")]
    assert len(calls) < 16


def test_run_bisecting_reraises_transient_faults() -> None:
    def action(items):
        raise StorageError("unreachable", transient=True)

    with pytest.raises(StorageError):
        run_bisecting([1, 2], action)


def test_dead_letter_reasons() -> None:
    assert as_dead_letter(MalformedMessage("x", "y")).reason == "x"
    assert as_dead_letter(StorageError("refused", transient=False)).reason == "db_refused"
    internal = as_dead_letter(ZeroDivisionError("boom"))
    assert internal.reason == "internal" and internal.detail == "ZeroDivisionError: boom"

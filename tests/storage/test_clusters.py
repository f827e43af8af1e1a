"""posts.cluster_id: stored with the post and read back with its scores."""

from __future__ import annotations

from datetime import timedelta

from finpulse.storage import Storage
from tests.records import scored


def test_cluster_ids_are_stored_and_read_back(storage: Storage) -> None:
    first = scored("first", timedelta(minutes=1)).model_copy(update={"cluster_id": "first"})
    copy = scored("copy", timedelta(minutes=2)).model_copy(update={"cluster_id": "first"})
    unclustered = scored("plain", timedelta(minutes=3))
    storage.save_scored([first, copy, unclustered])
    got = {p.id: p.cluster_id for p in storage.scores()}
    assert got == {"first": "first", "copy": "first", "plain": None}

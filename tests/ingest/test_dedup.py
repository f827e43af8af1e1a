"""Near-duplicate clustering: copies of one story share a cluster, different stories do not."""

from __future__ import annotations

import gc
import random
import string
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from finpulse.schemas import Post
from ingest.dedup import NearDuplicateIndex, normalize, shingles
from tests.records import scored

T0 = datetime(2024, 3, 4, tzinfo=timezone.utc)
STORY = (
    "Boeing shares fall after the FAA opens an investigation into the 737 MAX door plug "
    "blowout on an Alaska Airlines flight"
)


def post(post_id: str, text: str, minutes: int = 0, tickers: tuple[str, ...] = ("BA",)) -> Post:
    return Post(
        id=post_id,
        source="news",
        text=text,
        published_at=T0 + timedelta(minutes=minutes),
        tickers=tickers,
    )


def test_normalize_drops_urls_retweet_prefix_mentions_and_punctuation() -> None:
    assert normalize("RT @Reuters: Boeing FALLS, see https://t.co/x1 cc @desk #BA!") == (
        "boeing falls see cc ba"
    )


def test_syndicated_copies_retweets_and_small_edits_join_the_first_posts_cluster() -> None:
    index = NearDuplicateIndex()
    posts = [
        post("orig", f"{STORY} https://reut.rs/abc123"),
        post("syndicated", f"{STORY} https://finance.yahoo.com/news/boeing-faa-987", 3),
        post("retweet", f"RT @Reuters: {STORY} https://t.co/Zx81", 4),
        post("edited", STORY.replace("the FAA opens", "FAA opened") + " - Reuters", 9),
    ]
    assert index.assign_all(posts) == ["orig"] * 4


def test_different_stories_get_their_own_clusters() -> None:
    index = NearDuplicateIndex()
    posts = [
        post("a", STORY),
        post("b", "Boeing deliveries halved in the first eleven months of the year as MAX stays grounded"),
        post("c", "Boeing names a new chief executive after board ousts Muilenburg", 5),
        post("d", "Airbus wins a record order for A321neo jets from IndiGo", 6, ("EADSY",)),
    ]
    assert index.assign_all(posts) == ["a", "b", "c", "d"]


def test_templated_headlines_about_different_companies_are_not_copies() -> None:
    index = NearDuplicateIndex()
    one = post("one", "Acme Corp downgraded to hold from buy at Stifel Nicolaus", 0, ("ACME",))
    two = post("two", "Acme Corp downgraded to hold from buy at Stifel Nicolaus", 1, ("ACME",))
    other = post("other", "Acme Corp downgraded to hold from buy at Stifel Nicolaus", 2, ("BETA",))
    assert index.assign_all([one, two, other]) == ["one", "one", "other"]


def test_a_redelivered_post_keeps_its_cluster_and_the_index_forgets_old_posts() -> None:
    index = NearDuplicateIndex(horizon=timedelta(hours=1))
    assert index.assign("a", STORY, T0) == "a"
    assert index.assign("b", STORY, T0 + timedelta(minutes=30)) == "a"
    assert index.assign("b", "anything else entirely", T0) == "a"  # redelivery: same answer
    # Two hours later "a" and "b" have left the index: the story starts a new cluster.
    assert index.assign("c", STORY, T0 + timedelta(hours=2)) == "c"
    assert len(index) == 1


def test_seed_restores_the_stored_clusters() -> None:
    index = NearDuplicateIndex()
    stored = [
        scored("x", timedelta(0), ("BA",), text=STORY).model_copy(update={"cluster_id": "x"}),
        scored("y", timedelta(minutes=1), ("BA",), text=f"RT @a: {STORY}").model_copy(
            update={"cluster_id": "x"}
        ),
    ]
    assert index.seed(stored) == 2
    assert index.assign_all([post("z", f"{STORY} https://t.co/new", 5)]) == ["x"]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicateIndex(threshold=1.5)
    with pytest.raises(ValueError, match="max_posts"):
        NearDuplicateIndex(max_posts=0)


def test_signatures_estimate_the_jaccard_similarity_of_the_shingles() -> None:
    index = NearDuplicateIndex()
    others = [
        STORY,
        STORY.replace("Boeing", "Airbus").replace("Alaska", "United"),
        STORY[: len(STORY) // 2],
        f"{STORY} while the airline grounds its fleet for inspections",
        "Apple beats estimates on strong iPhone demand in China",
    ]
    mine = shingles(normalize(STORY))
    estimates = []
    for text in others:
        theirs = shingles(normalize(text))
        exact = len(np.intersect1d(mine, theirs)) / len(np.union1d(mine, theirs))
        estimates.append(index.similarity(index.signature(STORY), index.signature(text)))
        assert abs(estimates[-1] - exact) < 0.15, (text, exact, estimates[-1])
    assert estimates[0] == 1.0 and estimates[-1] < 0.1
    assert index.signature(STORY).dtype == np.uint32 and len(index.signature(STORY)) == 128


def test_shingles_of_ascii_are_its_character_five_grams_and_short_texts_are_one() -> None:
    text = normalize(STORY)
    assert len(np.unique(shingles(text))) == len({text[i : i + 5] for i in range(len(text) - 4)})
    assert len(shingles("ab")) == 1 and shingles("ab")[0] != shingles("ab ")[0]
    assert shingles("")[0] != shingles("\x00")[0]  # the length tells them apart
    assert len(shingles("münchen rück")) == len("münchen rück".encode()) - 4


def test_evicted_posts_leave_the_candidate_buckets() -> None:
    index = NearDuplicateIndex(max_posts=2)
    for i, text in enumerate([STORY, "Apple beats estimates", "Tesla recalls cars", STORY]):
        index.assign(f"p{i}", text, T0 + timedelta(minutes=i))
    assert len(index) == 2
    indexed = set().union(*({held} if isinstance(held, str) else held
                            for buckets in index._buckets for held in buckets.values()))
    assert indexed == {"p2", "p3"}
    assert index.assign("p4", STORY, T0 + timedelta(minutes=5)) == "p3"  # p0 is gone


def test_a_huge_post_is_clustered_by_its_opening_without_a_huge_hash_matrix() -> None:
    index = NearDuplicateIndex()
    article = STORY + " " + " ".join(f"paragraph{i}" for i in range(200_000))  # ~2.3 MB
    # Only the opening counts: the signature is that of the first ~5,000 characters.
    assert np.array_equal(index.signature(article), index.signature(article[:5000]))
    assert not np.array_equal(index.signature(article), index.signature(article[:3000]))
    assert index.assign("long", article, T0) == "long"
    assert index.assign("copy", article + " Updated with comment.", T0) == "long"
    assert index.assign("other", "Apple beats estimates " * 50_000, T0) == "other"


def test_a_full_index_gives_the_garbage_collector_nothing_to_scan() -> None:
    # Every full collection walks every tracked object; a scorer's index holds up to 100,000
    # posts, so its entries must be objects the collector stops tracking. (Copies of one
    # story share a bucket, a set: distinct stories here.)
    draw = random.Random(3)

    def words(count: int) -> str:
        return " ".join("".join(draw.choices(string.ascii_lowercase, k=6)) for _ in range(count))

    posts = [post(f"p{i}", words(12), minutes=i, tickers=("BA", "ALK")) for i in range(2000)]
    index = NearDuplicateIndex()
    index.assign_all([post("warm-up", words(12))])
    gc.collect()
    before = len(gc.get_objects())
    index.assign_all(posts)
    gc.collect()
    gc.collect()  # a tuple is untracked once the collector sees its items untracked
    assert len(gc.get_objects()) - before < 0.05 * len(posts)
    assert len(set(index.assign_all(posts))) == len(posts)  # distinct stories, as meant

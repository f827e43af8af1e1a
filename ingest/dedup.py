"""Near-duplicate clustering: the same story re-published counts as one.

Syndicated copies, retweets ("RT @desk: ...") and copy-paste with another URL or a
small edit are near-duplicates, not new information. Each post gets a ``cluster_id``:
the id of the first post of its cluster that the index saw (a post nobody resembles
is its own cluster, ``cluster_id == id``). The volume rules count clusters, and an
alert's evidence shows how many copies each post had.

Method: MinHash signatures over character 5-gram shingles of a normalised text
(lower case; URLs, ``RT @user:`` prefixes, @mentions, ``#`` and punctuation dropped),
and a MinHash LSH index (``datasketch``) for candidates, confirmed by the estimated
Jaccard similarity >= ``threshold`` (candidates come from an LSH tuned 0.2 lower, for
recall). Character shingles survive small edits that
word shingles would not (a changed word changes at most a few 5-grams).

The index lives in memory, per process, bounded by ``horizon`` (event time) and
``max_posts``. With several scorer processes each has its own index: copies of a story
that land on different processes (Kafka partitions are keyed by ticker, so copies about
the same ticker usually land together) are clustered separately. ``seed`` warms a new
process up from stored posts so a restart keeps the clusters it had.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from datasketch import MinHash, MinHashLSH

logger = logging.getLogger(__name__)

SHINGLE_CHARS = 5
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_RETWEET = re.compile(r"^\s*(?:rt|via)\s+@\w+\s*:?\s*", re.IGNORECASE)
_MENTION = re.compile(r"@\w+")
_NON_WORD = re.compile(r"[^\w$]+")


def normalize(text: str) -> str:
    """The text a near-duplicate comparison sees: no URLs, retweet prefix, mentions, punctuation."""
    text = _RETWEET.sub("", text)
    text = _URL.sub(" ", text)
    text = _MENTION.sub(" ", text)
    text = _NON_WORD.sub(" ", text.lower().replace("_", " "))
    return " ".join(text.split())


def shingles(text: str, size: int = SHINGLE_CHARS) -> set[bytes]:
    """The character ``size``-grams of a normalised text (the whole text when shorter)."""
    if len(text) <= size:
        return {text.encode()}
    return {text[i : i + size].encode() for i in range(len(text) - size + 1)}


@dataclass
class _Entry:
    cluster_id: str
    signature: MinHash
    published_at: datetime
    tickers: frozenset[str]


class NearDuplicateIndex:
    """Assigns cluster ids to posts; see the module docstring.

    Args:
        threshold: estimated Jaccard similarity of shingle sets at or above which two
            posts are copies of one story.
        num_perm: MinHash permutations (more: a finer similarity estimate, slower).
        horizon: posts published this long before the newest one seen leave the index.
        max_posts: at most this many posts are kept (the oldest leave first).

    Raises:
        ValueError: a parameter is out of range.
    """

    def __init__(
        self,
        threshold: float = 0.7,
        num_perm: int = 128,
        horizon: timedelta = timedelta(days=3),
        max_posts: int = 100_000,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        if max_posts < 1:
            raise ValueError(f"max_posts must be positive, got {max_posts}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.horizon = horizon
        self.max_posts = max_posts
        # LSH alone misses pairs near its threshold (tuned to 0.7 with 128 permutations it
        # finds a 0.7-similar pair 79% of the time): look for candidates 0.2 below it
        # (tuned to 0.5: 99% at 0.7) and confirm each with the signatures' estimate.
        self._lsh = MinHashLSH(threshold=max(threshold - 0.2, 0.1), num_perm=num_perm)
        # MinHash() draws its permutations anew each time (most of a signature's cost);
        # these are the same (seed 1), drawn once.
        template = MinHash(num_perm=num_perm)
        self._permutations, self._scheme = template.permutations, template.scheme
        self._entries: dict[str, _Entry] = {}
        self._order: deque[str] = deque()
        self._newest: datetime | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def signature(self, text: str) -> MinHash:
        """The MinHash signature of a text (after ``normalize``)."""
        signature = MinHash(num_perm=self.num_perm, permutations=self._permutations,
                            scheme=self._scheme)
        signature.update_batch(list(shingles(normalize(text))))
        return signature

    def assign(
        self,
        post_id: str,
        text: str,
        published_at: datetime,
        cluster_id: str | None = None,
        tickers: Iterable[str] = (),
    ) -> str:
        """Index one post and return its cluster id.

        Args:
            post_id: the post's id; a post indexed before keeps the cluster it got then.
            text: what to compare (title and text).
            published_at: event time, for the horizon.
            cluster_id: a cluster already known for the post (``seed``); None to find it.
            tickers: the post's tickers; two posts that both name tickers but share none
                are never copies (templated headlines about different companies).

        Returns:
            The id of the first indexed post of the cluster (``post_id`` for a new story).
        """
        known = self._entries.get(post_id)
        if known is not None:
            return known.cluster_id
        if self._newest is None or published_at > self._newest:
            self._newest = published_at
        self._evict(room=1)
        signature = self.signature(text)
        names = frozenset(tickers)
        if cluster_id is None:
            cluster_id = self._match(signature, names) or post_id
        self._entries[post_id] = _Entry(cluster_id, signature, published_at, names)
        self._order.append(post_id)
        self._lsh.insert(post_id, signature, check_duplication=False)
        return cluster_id

    def _match(self, signature: MinHash, tickers: frozenset[str]) -> str | None:
        """The cluster of the most similar indexed post at or above the threshold."""
        best: tuple[float, str] | None = None
        for key in self._lsh.query(signature):
            entry = self._entries[key]
            if tickers and entry.tickers and not tickers & entry.tickers:
                continue
            similarity = signature.jaccard(entry.signature)
            if similarity >= self.threshold and (best is None or similarity > best[0]):
                best = (similarity, entry.cluster_id)
        return None if best is None else best[1]

    def _evict(self, room: int) -> None:
        """Drop posts past the horizon, and the oldest until ``room`` more fit."""
        assert self._newest is not None
        oldest_kept = self._newest - self.horizon
        while self._order:
            key = self._order[0]
            entry = self._entries[key]
            if len(self._entries) + room <= self.max_posts and entry.published_at >= oldest_kept:
                return
            self._order.popleft()
            del self._entries[key]
            self._lsh.remove(key)

    def seed(self, posts: Iterable[_PostLike]) -> int:
        """Load stored posts (with their stored ``cluster_id``), oldest first.

        Returns:
            The number of posts indexed.
        """
        count = 0
        for post in sorted(posts, key=lambda p: (p.published_at, p.id)):
            if post.id not in self._entries:
                cluster = getattr(post, "cluster_id", None)
                self.assign(post.id, post_text(post), post.published_at, cluster, post.tickers)
                count += 1
        logger.info("near-duplicate index seeded with %d posts", count)
        return count

    def assign_all(self, posts: Sequence[_PostLike]) -> list[str]:
        """Cluster ids for a batch of posts (``Post``/``ScoredPost``), in the batch's order."""
        return [
            self.assign(post.id, post_text(post), post.published_at, tickers=post.tickers)
            for post in posts
        ]


class _PostLike(Protocol):
    """What ``assign_all`` reads from a post (``Post`` and ``ScoredPost`` have it)."""

    id: str
    text: str
    title: str | None
    published_at: datetime
    tickers: tuple[str, ...]


def post_text(post: _PostLike) -> str:
    """What a post is compared on: its title and text."""
    return f"{post.title}\n{post.text}" if post.title else post.text

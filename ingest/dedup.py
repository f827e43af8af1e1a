"""Near-duplicate clustering: the same story re-published counts as one.

Syndicated copies, retweets ("RT @desk: ...") and copy-paste with another URL or a
small edit are near-duplicates, not new information. Each post gets a ``cluster_id``:
the id of the first post of its cluster that the index saw (a post nobody resembles
is its own cluster, ``cluster_id == id``). The volume rules count clusters, and an
alert's evidence shows how many copies each post had.

Method: MinHash signatures over 5-byte shingles of a normalised text's UTF-8 (lower case;
URLs, ``RT @user:`` prefixes, @mentions, ``#`` and punctuation dropped; for the ASCII of most
posts a shingle is a character 5-gram), and a banded LSH index for candidates, confirmed by
the estimated Jaccard similarity >= ``threshold`` (candidates come from bands tuned 0.2
lower, for recall). Character shingles survive small edits that word shingles would not (a
changed word changes at most a few 5-grams).

Signatures are computed with numpy, a few hundred shingles at a time: each shingle (5 bytes,
one integer) is mixed once (the splitmix64 finaliser) and then hashed by ``num_perm`` random
multiply-add-shift functions; a signature is each function's minimum, as uint32. Only a
text's first ``MAX_SHINGLED_CHARS`` characters are shingled. Against
``datasketch`` (a SHA-1 per shingle, in Python), which this replaced: 11,000 posts/s instead
of 5,500 on the bench tweets in 256-post batches, and 3.5% instead of 9.9% of a scorer's
busy samples while it drains the broker (py-spy, ``bench/e2e.py``'s capacity run).

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
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

#: Bytes per shingle (at most 7: a shingle and its length tag are packed into 64 bits).
SHINGLE_CHARS = 5
#: Shingles hashed together: a hash matrix of 128 functions x ~600 shingles (8 tweets) x 8
#: bytes, ~0.6 MB, stays in a core's cache (64 tweets at once were slower).
_SIGNATURE_CHUNK = 600
#: Only the first this many characters of a normalised text are shingled: copies of a long
#: article share its opening, and a 1 MB post would otherwise need a 1 GB hash matrix.
MAX_SHINGLED_CHARS = 4096
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


def shingles(text: str, size: int = SHINGLE_CHARS) -> np.ndarray:
    """The ``size``-byte shingles of a normalised text's UTF-8, as uint64, repeats kept (a
    minimum does not need them removed); the whole text, tagged with its length, when it is
    shorter."""
    raw = text.encode()
    if len(raw) <= size:
        return np.array([int.from_bytes(raw, "big") | (len(raw) << 56)], dtype=np.uint64)
    data = np.frombuffer(raw, dtype=np.uint8).astype(np.uint64)
    count = len(data) - size + 1
    values = np.zeros(count, dtype=np.uint64)
    for offset in range(size):
        values = (values << np.uint64(8)) | data[offset : offset + count]
    return values


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over all 64 output bits."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= num_perm`` whose chance of making a pair a
    candidate, ``1 - (1 - s**rows)**bands``, is closest to a step at ``threshold``: the
    least area of false positives below it plus false negatives above it."""
    below = np.linspace(0.0, threshold, 200)
    above = np.linspace(threshold, 1.0, 200)

    def area(y: np.ndarray, x: np.ndarray) -> float:
        return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())

    best: tuple[float, int, int] | None = None
    for rows in range(1, num_perm + 1):
        for bands in range(1, num_perm // rows + 1):
            error = (area(1 - (1 - below**rows) ** bands, below)
                     + area((1 - above**rows) ** bands, above))
            if best is None or error < best[0]:
                best = (error, bands, rows)
    assert best is not None
    return best[1], best[2]


#: An indexed post: ``(cluster_id, signature, published_at, tickers)``. A plain tuple of
#: strings, a datetime and an array, which the garbage collector stops tracking (it does so
#: for exact tuples only, not a NamedTuple or a dataclass): a full index (100,000 posts)
#: adds nothing to the collector's full passes, which walk every tracked object.
_Entry = tuple[str, np.ndarray, datetime, tuple[str, ...]]


class NearDuplicateIndex:
    """Assigns cluster ids to posts; see the module docstring.

    Args:
        threshold: estimated Jaccard similarity of shingle sets at or above which two
            posts are copies of one story.
        num_perm: MinHash functions (more: a finer similarity estimate, slower).
        horizon: posts published this long before the newest one seen leave the index.
        max_posts: at most this many posts are kept (the oldest leave first).
        seed: draws the hash functions; fixed, so clustering is reproducible.

    Raises:
        ValueError: a parameter is out of range.
    """

    def __init__(
        self,
        threshold: float = 0.7,
        num_perm: int = 128,
        horizon: timedelta = timedelta(days=3),
        max_posts: int = 100_000,
        seed: int = 1,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        if max_posts < 1:
            raise ValueError(f"max_posts must be positive, got {max_posts}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.horizon = horizon
        self.max_posts = max_posts
        # Bands tuned to the threshold miss pairs near it (tuned to 0.7 with 128 functions,
        # 14 bands of 9, they make a 0.7-similar pair a candidate 44% of the time): look for
        # candidates 0.2 below it (tuned to 0.5, 25 bands of 5: 99% at 0.7) and confirm each
        # with the signatures' estimate.
        bands, rows = lsh_bands(max(threshold - 0.2, 0.1), num_perm)
        self._banded = bands * rows
        self._rows = rows
        # Per band: its key (an int) -> the post in it, or a set when several share it. A
        # lone post is most buckets, and a set costs 216 bytes: the index took ~10 KB a
        # post with a set in every bucket and bytes keys, ~4 KB this way (README: Memory).
        self._buckets: list[dict[int, str | set[str]]] = [{} for _ in range(bands)]
        random = np.random.default_rng(seed)
        # A band's key is a random odd-weighted sum of its values, mod 2**64; a collision
        # only adds a candidate, which the similarity check then drops.
        self._band_weights = random.integers(0, 2**63, rows, dtype=np.uint64) * np.uint64(2) + 1
        # Odd multipliers: multiply-add-shift hashing of 64-bit keys to their top 32 bits.
        self._multipliers = (random.integers(0, 2**63, num_perm, dtype=np.uint64) * np.uint64(2)
                             + np.uint64(1))[:, None]
        self._offsets = random.integers(0, 2**63, num_perm, dtype=np.uint64)[:, None]
        self._entries: dict[str, _Entry] = {}
        self._order: deque[str] = deque()
        self._newest: datetime | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def signature(self, text: str) -> np.ndarray:
        """The MinHash signature of a text (after ``normalize``): ``num_perm`` uint32."""
        return self.signatures([text])[0]

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """The signatures of several texts, shape ``(len(texts), num_perm)``, computed
        together (a few numpy operations per chunk of texts instead of per text)."""
        found = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        parts: list[np.ndarray] = []
        done = pending = 0
        for i, text in enumerate(texts):
            parts.append(shingles(normalize(text)[:MAX_SHINGLED_CHARS]))
            pending += len(parts[-1])
            if i == len(texts) - 1 or pending >= _SIGNATURE_CHUNK:
                offsets = np.cumsum([0] + [len(part) for part in parts[:-1]])
                hashes = self._multipliers * _mix(np.concatenate(parts))[None, :]
                hashes += self._offsets
                hashes >>= np.uint64(32)
                found[done:done + len(parts)] = np.minimum.reduceat(hashes, offsets, axis=1).T
                done += len(parts)
                parts, pending = [], 0
        return found

    @staticmethod
    def similarity(one: np.ndarray, other: np.ndarray) -> float:
        """The Jaccard similarity of two texts' shingles, estimated from their signatures."""
        return float(np.count_nonzero(one == other)) / len(one)

    def assign(
        self,
        post_id: str,
        text: str,
        published_at: datetime,
        cluster_id: str | None = None,
        tickers: Iterable[str] = (),
        signature: np.ndarray | None = None,
    ) -> str:
        """Index one post and return its cluster id.

        Args:
            post_id: the post's id; a post indexed before keeps the cluster it got then.
            text: what to compare (title and text).
            published_at: event time, for the horizon.
            cluster_id: a cluster already known for the post (``seed``); None to find it.
            tickers: the post's tickers; two posts that both name tickers but share none
                are never copies (templated headlines about different companies).
            signature: ``signature(text)`` when already computed.

        Returns:
            The id of the first indexed post of the cluster (``post_id`` for a new story).
        """
        known = self._entries.get(post_id)
        if known is not None:
            return known[0]
        if self._newest is None or published_at > self._newest:
            self._newest = published_at
        self._evict(room=1)
        if signature is None:
            signature = self.signature(text)
        names = tuple(tickers)
        keys = self._band_keys(signature)
        if cluster_id is None:
            cluster_id = self._match(signature, keys, names) or post_id
        self._entries[post_id] = (cluster_id, signature, published_at, names)
        self._order.append(post_id)
        for key, buckets in zip(keys, self._buckets, strict=True):
            held = buckets.get(key)
            if held is None:
                buckets[key] = post_id
            elif isinstance(held, str):
                buckets[key] = {held, post_id}
            else:
                held.add(post_id)
        return cluster_id

    def _band_keys(self, signature: np.ndarray) -> list[int]:
        bands = signature[: self._banded].reshape(-1, self._rows).astype(np.uint64)
        return (bands * self._band_weights).sum(axis=1).tolist()

    def _candidates(self, keys: list[int]) -> set[str]:
        """Indexed posts that share at least one band key with ``keys``."""
        found: set[str] = set()
        for key, buckets in zip(keys, self._buckets, strict=True):
            held = buckets.get(key)
            if isinstance(held, str):
                found.add(held)
            elif held is not None:
                found.update(held)
        return found

    def _match(self, signature: np.ndarray, keys: list[int],
               tickers: tuple[str, ...]) -> str | None:
        """The cluster of the most similar indexed post at or above the threshold."""
        best: tuple[float, str] | None = None
        wanted = set(tickers)
        for key in sorted(self._candidates(keys)):
            cluster, other, _, names = self._entries[key]
            if wanted and names and wanted.isdisjoint(names):
                continue
            similarity = self.similarity(signature, other)
            if similarity >= self.threshold and (best is None or similarity > best[0]):
                best = (similarity, cluster)
                if similarity == 1.0:  # an exact copy: no later candidate can beat it
                    break
        return None if best is None else best[1]

    def _evict(self, room: int) -> None:
        """Drop posts past the horizon, and the oldest until ``room`` more fit."""
        assert self._newest is not None
        oldest_kept = self._newest - self.horizon
        while self._order:
            key = self._order[0]
            _, signature, published_at, _ = self._entries[key]
            if len(self._entries) + room <= self.max_posts and published_at >= oldest_kept:
                return
            self._order.popleft()
            del self._entries[key]
            for band_key, buckets in zip(self._band_keys(signature), self._buckets,
                                         strict=True):
                held = buckets[band_key]
                if isinstance(held, str):
                    del buckets[band_key]
                else:
                    held.discard(key)
                    if len(held) == 1:
                        buckets[band_key] = held.pop()

    def seed(self, posts: Iterable[_PostLike]) -> int:
        """Load stored posts (with their stored ``cluster_id``), oldest first.

        Returns:
            The number of posts indexed.
        """
        ordered = sorted(posts, key=lambda p: (p.published_at, p.id))
        texts = [post_text(post) for post in ordered]
        count = 0
        for post, text, signature in zip(ordered, texts, self.signatures(texts), strict=True):
            if post.id not in self._entries:
                cluster = getattr(post, "cluster_id", None)
                self.assign(post.id, text, post.published_at, cluster, post.tickers,
                            signature=signature)
                count += 1
        logger.info("near-duplicate index seeded with %d posts", count)
        return count

    def assign_all(self, posts: Sequence[_PostLike]) -> list[str]:
        """Cluster ids for a batch of posts (``Post``/``ScoredPost``), in the batch's order."""
        texts = [post_text(post) for post in posts]
        signatures = self.signatures(texts)
        return [
            self.assign(post.id, text, post.published_at, tickers=post.tickers,
                        signature=signature)
            for post, text, signature in zip(posts, texts, signatures, strict=True)
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

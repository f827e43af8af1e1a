"""Labelled data: reading ``text,label`` CSV files, deduplication and the seeded split.

Texts are grouped by a normalised form (NFKC, collapsed whitespace, case-folded) so that
the same sentence in two files (PhraseBank 50-agree contains every all-agree sentence)
becomes one example that lands in exactly one split. A text that carries two different
labels is dropped: no label for it can be trusted.

The split file written beside a model holds, per example, the SHA-1 of the normalised
text, its label, the files it came from and its split: enough to rebuild the split from
the same files and to report per-source metrics, without copying any text (PhraseBank
may not be redistributed).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from finpulse.errors import DataError
from finpulse.schemas import LABELS

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_WHITESPACE = re.compile(r"\s+")

SourceKind = Literal["news", "social"]
#: Names (data-file stems, ``Post.source`` values) that mark social-media text; anything
#: else counts as news. PhraseBank and FinEntity are news, the Twitter and StockTwits
#: sets social.
SOCIAL_HINTS = ("social", "twitter", "tweet", "stocktwits", "stockemotions", "reddit")
#: The text a ``source_token`` model reads before every input, per source kind.
SOURCE_MARKERS: dict[str, str] = {"news": "news:", "social": "social:"}


@dataclass(frozen=True)
class Example:
    """One unique text with its label.

    Attributes:
        text: the text as first seen.
        label: one of ``finpulse.schemas.LABELS``.
        key: SHA-1 of the normalised text (the example's identity).
        sources: the stems of the files the text appeared in, sorted.
    """

    text: str
    label: str
    key: str
    sources: tuple[str, ...]

    @property
    def kind(self) -> SourceKind:
        """``social`` when every file the text came from is social, else ``news``."""
        kinds = {source_kind(source) for source in self.sources}
        return "social" if kinds == {"social"} else "news"

    @property
    def stratum(self) -> str:
        """The group a stratified split keeps in proportion: sources plus label."""
        return "+".join(self.sources) + "|" + self.label


@dataclass
class Dataset:
    """Deduplicated examples and what deduplication removed.

    Attributes:
        examples: unique examples in first-seen order.
        duplicates: rows dropped because their text had already been seen with the same label.
        conflicts: distinct texts dropped because they carried different labels.
    """

    examples: list[Example] = field(default_factory=list)
    duplicates: int = 0
    conflicts: int = 0


def source_kind(name: str) -> SourceKind:
    """The kind of a source name (a data file's stem or a post's ``source``).

    Args:
        name: e.g. ``twitter_fin_train``, ``phrasebank_allagree``, ``news``, ``social``.

    Returns:
        ``social`` when the name contains one of ``SOCIAL_HINTS``, else ``news``.
    """
    lowered = name.lower()
    return "social" if any(hint in lowered for hint in SOCIAL_HINTS) else "news"


def with_marker(text: str, source: str) -> str:
    """Prefix a text with the marker of its source's kind (what ``source_token`` models read)."""
    return f"{SOURCE_MARKERS[source_kind(source)]} {text}"


def few_shot_sample(examples: Sequence[Example], shots: int, seed: int) -> list[Example]:
    """Draw ``shots`` examples of each label, seeded (a stratified few-shot training set).

    Each label's examples are ordered by key and shuffled with ``seed`` and the label, so
    the draw depends only on the examples, ``shots`` and ``seed`` (not on input order),
    and a larger ``shots`` with the same seed extends the smaller draw.

    Args:
        examples: the pool (e.g. the training split).
        shots: examples per label.
        seed: the random seed.

    Returns:
        ``shots`` examples per label in ``LABELS`` order, labels interleaved by draw order.

    Raises:
        DataError: ``shots`` is not positive, or a label has fewer than ``shots`` examples.
    """
    if shots < 1:
        raise DataError(f"shots: must be at least 1, got {shots}")
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    drawn: list[list[Example]] = []
    for label in LABELS:
        pool = sorted(by_label[label], key=lambda ex: ex.key)
        if len(pool) < shots:
            raise DataError(f"{shots} shots of {label!r} asked for; the pool has {len(pool)}")
        random.Random(f"{seed}:{label}").shuffle(pool)
        drawn.append(pool[:shots])
    return [group[i] for i in range(shots) for group in drawn]


def normalise_text(text: str) -> str:
    """Return the form texts are compared by: NFKC, single spaces, stripped, case-folded."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def text_key(text: str) -> str:
    """Return the SHA-1 hex digest of the normalised text."""
    return hashlib.sha1(normalise_text(text).encode("utf-8")).hexdigest()


def read_labelled_csv(path: str | Path) -> list[tuple[str, str]]:
    """Read a ``text,label`` CSV file.

    Args:
        path: the file; extra columns are ignored.

    Returns:
        ``(text, label)`` pairs in file order.

    Raises:
        DataError: the file is missing or unreadable, lacks a ``text`` or ``label`` column,
            has no rows, or a row has an empty text or a label outside negative/neutral/positive
            (the message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [name for name in ("text", "label") if name not in columns]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)}; "
                    f"expected a 'text,label' header, found {','.join(columns) or 'nothing'}"
                )
            rows: list[tuple[str, str]] = []
            for row in reader:
                line = reader.line_num
                text, label = row.get("text"), row.get("label")
                if text is None or not text.strip():
                    raise DataError(f"{path}:{line}: empty text")
                label = (label or "").strip().lower()
                if label not in LABELS:
                    raise DataError(
                        f"{path}:{line}: unknown label {row.get('label')!r} "
                        f"(expected one of {', '.join(LABELS)})"
                    )
                rows.append((text, label))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from exc
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def load_dataset(paths: Sequence[str | Path]) -> Dataset:
    """Read and deduplicate labelled files into one dataset.

    Args:
        paths: ``text,label`` CSV files; a file's stem names it as a source.

    Returns:
        The unique examples; texts seen with conflicting labels are dropped.

    Raises:
        DataError: no files were given, or a file is invalid (see ``read_labelled_csv``).
    """
    if not paths:
        raise DataError("no data files given")
    labels: dict[str, set[str]] = defaultdict(set)
    sources: dict[str, set[str]] = defaultdict(set)
    first_text: dict[str, str] = {}
    rows_read = 0
    for path in paths:
        stem = Path(path).stem
        for text, label in read_labelled_csv(path):
            rows_read += 1
            key = text_key(text)
            first_text.setdefault(key, text)
            labels[key].add(label)
            sources[key].add(stem)
    dataset = Dataset()
    for key, text in first_text.items():
        if len(labels[key]) > 1:
            dataset.conflicts += 1
            continue
        (label,) = labels[key]
        dataset.examples.append(Example(text, label, key, tuple(sorted(sources[key]))))
    dataset.duplicates = rows_read - len(first_text)
    logger.info(
        "read %d rows from %d file(s): %d unique examples, %d duplicate rows, "
        "%d conflicting texts dropped",
        rows_read, len(paths), len(dataset.examples), dataset.duplicates, dataset.conflicts,
    )
    return dataset


def split_examples(
    examples: Sequence[Example], *, seed: int, validation: float, test: float
) -> dict[str, list[Example]]:
    """Split examples into train/validation/test, stratified by sources and label.

    Each stratum is shuffled with ``seed`` and cut by the fractions, so the split is the
    same for the same files and seed whatever order the strata come in.

    Args:
        examples: unique examples.
        seed: the random seed.
        validation: fraction for validation.
        test: fraction for test.

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``.
    """
    strata: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        strata[example.stratum].append(example)
    result: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for name in sorted(strata):
        members = sorted(strata[name], key=lambda ex: ex.key)
        random.Random(f"{seed}:{name}").shuffle(members)
        n_test = round(len(members) * test)
        n_val = round(len(members) * validation)
        result["test"].extend(members[:n_test])
        result["validation"].extend(members[n_test : n_test + n_val])
        result["train"].extend(members[n_test + n_val :])
    return result


def write_split(path: Path, split: dict[str, list[Example]]) -> None:
    """Write the split as CSV ``key,split,label,sources`` (no text)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["key", "split", "label", "sources"])
        for name in SPLITS:
            for example in split[name]:
                writer.writerow([example.key, name, example.label, "+".join(example.sources)])


def read_split(path: Path) -> dict[str, dict[str, str]]:
    """Read a split file.

    Returns:
        ``{key: {"split": ..., "label": ..., "sources": ...}}``.

    Raises:
        DataError: the file is missing or not a split file.
    """
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != ["key", "split", "label", "sources"]:
            raise DataError(f"{path}: not a split file (header {reader.fieldnames})")
        return {
            row["key"]: {"split": row["split"], "label": row["label"], "sources": row["sources"]}
            for row in reader
        }


def select_split(
    rows: Iterable[tuple[str, str]], split: dict[str, dict[str, str]], name: str
) -> list[tuple[str, str]]:
    """Keep the rows whose text belongs to split ``name``, once per unique text.

    Args:
        rows: ``(text, label)`` pairs, e.g. from ``read_labelled_csv``.
        split: a split as returned by ``read_split``.
        name: ``train``, ``validation`` or ``test``.
    """
    seen: set[str] = set()
    kept: list[tuple[str, str]] = []
    for text, label in rows:
        key = text_key(text)
        entry = split.get(key)
        if entry is not None and entry["split"] == name and key not in seen:
            seen.add(key)
            kept.append((text, label))
    return kept

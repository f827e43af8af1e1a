"""Replays a file of posts onto the raw topics: the demo's and the tests' source.

Formats, by extension:

- ``.jsonl``: one ``Post`` JSON object per line (blank lines are skipped).
- ``.csv``: a header with at least ``text`` and ``published_at``; optional ``id``,
  ``source`` (default ``news``), ``title``, ``url``, ``author``, ``lang`` and ``tickers``
  (space- or comma-separated). A missing ``id`` becomes a stable hash of
  ``text`` + ``published_at``, so replaying a file twice yields the same ids (and the
  database deduplicates). Posts without tickers get them when consumed.

A bad row raises ``DataError`` naming the file and line, before anything after it is
published; ``skip_invalid=True`` logs and counts bad rows instead.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from finpulse.errors import DataError
from finpulse.schemas import Post
from ingest.producer import PostProducer

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("id", "source", "text", "published_at", "title", "url", "author", "tickers", "lang")
_TICKER_SPLIT = re.compile(r"[\s,;]+")


def stable_post_id(text: str, published_at: str) -> str:
    """A deterministic id for a post that came without one."""
    digest = hashlib.sha256(f"{published_at}\x00{text}".encode()).hexdigest()
    return f"sha256-{digest[:32]}"


def _csv_record(row: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for column in CSV_COLUMNS:
        value = row.get(column)
        if value is None or (column != "text" and not value.strip()):
            continue
        record[column] = value if column == "text" else value.strip()
    record.setdefault("source", "news")
    if "tickers" in record:
        record["tickers"] = [t for t in _TICKER_SPLIT.split(record["tickers"]) if t]
    if "id" not in record and "text" in record and "published_at" in record:
        record["id"] = stable_post_id(record["text"], record["published_at"])
    return record


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Yield ``(line number, record)``; a string record is a parse error message."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield lineno, f"not JSON: {exc.msg}"
                    continue
                yield lineno, data if isinstance(data, dict) else "not a JSON object"
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"text", "published_at"} - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{path}: CSV needs the column(s) {', '.join(sorted(missing))}")
            unknown = set(reader.fieldnames or ()) - set(CSV_COLUMNS)
            if unknown:
                logger.warning("%s: ignoring unknown column(s) %s", path, ", ".join(sorted(unknown)))
            for row in reader:
                # The line the row ends on (quoted fields may span lines).
                yield reader.line_num, _csv_record(row)
    else:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv or .jsonl")


def read_posts(path: Path, *, skip_invalid: bool = False) -> Iterator[Post]:
    """Read posts from a ``.jsonl`` or ``.csv`` file, lazily, in file order.

    Args:
        path: the file.
        skip_invalid: log and skip bad rows instead of raising (a summary with the
            count is logged at the end).

    Yields:
        Validated posts.

    Raises:
        DataError: the file is missing, of an unknown type, not UTF-8, lacks required
            CSV columns, or (unless ``skip_invalid``) a row is bad; the message names
            the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    skipped = 0
    try:
        for lineno, record in _rows(path):
            if isinstance(record, str):
                problem = record
            else:
                try:
                    yield Post.model_validate(record)
                    continue
                except ValidationError as exc:
                    error = exc.errors()[0]
                    field = ".".join(str(p) for p in error["loc"]) or "(record)"
                    problem = f"{field}: {error['msg']}"
            if not skip_invalid:
                raise DataError(f"{path}:{lineno}: {problem}")
            skipped += 1
            logger.warning("%s:%d: skipped: %s", path, lineno, problem)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from exc
    if skipped:
        logger.warning("%s: skipped %d invalid row(s)", path, skipped)


def replay(
    path: Path,
    producer: PostProducer,
    *,
    rate: float | None = None,
    progress: bool = False,
    skip_invalid: bool = False,
) -> int:
    """Publish the posts of a file onto the raw topics, in file order, then flush.

    Args:
        path: a ``.jsonl`` or ``.csv`` file of posts.
        producer: where to publish.
        rate: messages per second at most; ``None`` publishes as fast as possible.
        progress: show a progress bar (tqdm) on stderr.
        skip_invalid: skip bad rows instead of stopping at the first one.

    Returns:
        How many posts were published.

    Raises:
        DataError: a bad row (what came before it is published and flushed).
        IngestError: publishing failed.
        ValueError: ``rate`` is not positive.
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    interval = 1.0 / rate if rate else 0.0
    posts = read_posts(path, skip_invalid=skip_invalid)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="post", desc=Path(path).name)
    count = 0
    started = time.monotonic()
    try:
        for post in posts:
            if interval:
                # Pace against the start, not the previous send, so delays do not accumulate.
                delay = started + count * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.publish_post(post)
            count += 1
            if bar is not None:
                bar.update(1)
            if count % 1000 == 0:
                producer.flush()
    finally:
        producer.flush()
        if bar is not None:
            bar.close()
    logger.info("replayed %d post(s) from %s", count, path)
    return count

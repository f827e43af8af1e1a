"""Build the demo's bundled sample stream from the Twitter Financial News set (MIT).

Only texts the shipped default model never trained on go in: each tweet's key (SHA-1 of
its normalised text, ``models.data.text_key``) is looked up in the model's split file
(``models/default/split.csv``), and only the held-out ``test`` and ``validation`` texts are
kept; a text in the ``train`` split, or not in the split file, is refused. Validation texts
were never trained on either (they only chose the epoch to stop at), and the 953 test
tweets alone are too thin a stream (about 13 an hour) and lack the burst's story.

The texts are real, human-written finance tweets; only their timestamps are assigned
here: 72 hours of traffic with a day/night rhythm, plus one genuine burst whose timing is
arranged: every held-out Uber tweet that is not bullish (the London licence loss, the
appeal, an executive leaving, put buying) packed into one afternoon, which the alert rules
should catch. The bullish Uber tweets stay spread over the three days as its baseline.
Re-running with the same input gives the same file.

    PYTHONPATH=. python scripts/make_demo_stream.py ../shared/data/twitter_fin_train.csv \\
        finpulse/data/demo_stream.jsonl [models/default/split.csv]
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.data import read_split, text_key

START = datetime(2026, 11, 23, tzinfo=timezone.utc)
HOURS = 72
BURST_START = START + timedelta(hours=62)  # 2026-11-25 14:00 UTC
BURST_MINUTES = 50
BURST_COMPANY = re.compile(r"\bUber\b|\$UBER\b")
HELD_OUT = ("test", "validation")
DEFAULT_SPLIT = Path(__file__).resolve().parent.parent / "models" / "default" / "split.csv"


def _hourly_weight(hour: int) -> float:
    """US market hours are busiest; nights are quiet."""
    return 0.25 + math.exp(-(((hour - 16) % 24) ** 2) / 18.0)


def _timestamps(rng: random.Random, n: int) -> list[datetime]:
    weights = [_hourly_weight((START + timedelta(hours=h)).hour) for h in range(HOURS)]
    hours = rng.choices(range(HOURS), weights=weights, k=n)
    return sorted(START + timedelta(hours=h, seconds=rng.uniform(0, 3600)) for h in hours)


def _record(text: str, published_at: datetime) -> dict[str, object]:
    digest = hashlib.sha1(text.encode()).hexdigest()[:16]
    # Tweets that lead with a cashtag read like social posts; the rest like headlines.
    source = "social" if text.lstrip().startswith("$") else "news"
    return {
        "id": f"tw-{digest}",
        "source": source,
        "text": text,
        "published_at": published_at.isoformat().replace("+00:00", "Z"),
    }


def held_out(rows: list[dict[str, str]], split: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    """Keep the rows whose text the model never trained on, once each, in file order.

    Args:
        rows: ``text,label`` rows of the Twitter set.
        split: the model's split file, as ``models.data.read_split`` returns it.

    Returns:
        The rows whose key is in a held-out split, each with its ``split`` added.
    """
    kept: list[dict[str, str]] = []
    seen: set[str] = set()
    for row in rows:
        key = text_key(row["text"])
        entry = split.get(key)
        if entry is None or entry["split"] not in HELD_OUT or key in seen:
            continue
        seen.add(key)
        kept.append({**row, "split": entry["split"]})
    return kept


def build(
    rows: list[dict[str, str]], split: dict[str, dict[str, str]], seed: int = 7
) -> list[dict[str, object]]:
    """Assign timestamps to the held-out rows and arrange the Uber burst.

    Args:
        rows: ``text,label`` rows of the Twitter set (train rows are dropped here).
        split: the model's split file, as ``models.data.read_split`` returns it.
        seed: the random seed (same input and seed, same stream).

    Returns:
        The stream's records, sorted by ``published_at``.
    """
    rng = random.Random(seed)
    rows = held_out(rows, split)
    burst = [r for r in rows if r["label"] != "positive" and BURST_COMPANY.search(r["text"])]
    burst_ids = {id(r) for r in burst}
    background = [r for r in rows if id(r) not in burst_ids]
    rng.shuffle(background)
    records = [
        _record(r["text"], t) for r, t in zip(background, _timestamps(rng, len(background)))
    ]
    burst_times = sorted(
        BURST_START + timedelta(seconds=rng.uniform(0, BURST_MINUTES * 60)) for _ in burst
    )
    records += [_record(r["text"], t) for r, t in zip(burst, burst_times)]
    records.sort(key=lambda rec: str(rec["published_at"]))
    for record in records:  # the promise this file exists for: no training text gets out
        entry = split.get(text_key(str(record["text"])))
        assert entry is not None and entry["split"] in HELD_OUT, f"not held out: {record['text']!r}"
    return records


def main(source: str, target: str, split_file: str | None = None) -> None:
    split = read_split(Path(split_file) if split_file else DEFAULT_SPLIT)
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    records = build(rows, split)
    with open(target, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} posts to {Path(target)}")


if __name__ == "__main__":
    main(*sys.argv[1:4])

"""Build the demo's bundled sample stream from the Twitter Financial News set (MIT).

The texts are real, human-written finance tweets; only their timestamps are assigned
here: 72 hours of traffic with a day/night rhythm, plus one genuine burst, every
negative Boeing tweet in the set packed into one afternoon, which the alert rules
should catch. Re-running with the same input gives the same file.

    python scripts/make_demo_stream.py /path/to/twitter_fin_train.csv finpulse/data/demo_stream.jsonl
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

START = datetime(2026, 11, 23, tzinfo=timezone.utc)
HOURS = 72
BURST_START = START + timedelta(hours=62)  # 2026-11-25 14:00 UTC
BURST_MINUTES = 50
BURST_COMPANY = re.compile(r"\bBoeing\b|\$BA\b")
BACKGROUND_POSTS = 2400


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


def build(rows: list[dict[str, str]], seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    burst = [r for r in rows if r["label"] == "negative" and BURST_COMPANY.search(r["text"])]
    burst_ids = {id(r) for r in burst}
    rest = [r for r in rows if id(r) not in burst_ids]
    background = rng.sample(rest, BACKGROUND_POSTS)
    # Everything else about Boeing stays in, spread over the three days, as its baseline.
    background += [r for r in rest if BURST_COMPANY.search(r["text"]) and r not in background]
    rng.shuffle(background)
    records = [
        _record(r["text"], t) for r, t in zip(background, _timestamps(rng, len(background)))
    ]
    burst_times = sorted(
        BURST_START + timedelta(seconds=rng.uniform(0, BURST_MINUTES * 60)) for _ in burst
    )
    records += [_record(r["text"], t) for r, t in zip(burst, burst_times)]
    records.sort(key=lambda rec: str(rec["published_at"]))
    return records


def main(source: str, target: str) -> None:
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    records = build(rows)
    with open(target, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} posts to {Path(target)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""Render the dashboards to JSON: ``python -m dashboards.build [--check]``.

The JSON in ``dashboards/json/`` is generated and committed (Grafana provisioning reads
it); ``--check`` exits 1 when it is stale, and tests/dashboards/test_structure.py does too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import pipeline, sentiment

JSON_DIR = Path(__file__).resolve().parent / "json"
BUILDERS = {sentiment.UID: sentiment.build, pipeline.UID: pipeline.build}


def render() -> dict[str, dict[str, Any]]:
    """Every dashboard as a JSON-ready dict, by uid.

    Returns:
        ``{uid: dashboard}``, in the form Grafana's API and provisioning accept.
    """
    return {uid: json.loads(JSONEncoder().encode(make().build())) for uid, make in BUILDERS.items()}


def dumps(dashboard: dict[str, Any]) -> str:
    """The committed text of one dashboard (stable key order, trailing newline)."""
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def write(out_dir: Path = JSON_DIR) -> list[Path]:
    """Write every dashboard to ``out_dir/<uid>.json``.

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, dashboard in render().items():
        path = out_dir / f"{uid}.json"
        path.write_text(dumps(dashboard))
        written.append(path)
    return written


def stale(out_dir: Path = JSON_DIR) -> list[str]:
    """The uids whose committed JSON differs from what the code generates."""
    return [
        uid for uid, dashboard in render().items()
        if not (out_dir / f"{uid}.json").is_file() or (out_dir / f"{uid}.json").read_text() != dumps(dashboard)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.build", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    args = parser.parse_args(argv)
    if args.check:
        old = stale()
        for uid in old:
            print(f"stale: dashboards/json/{uid}.json (run python -m dashboards.build)", file=sys.stderr)
        return 1 if old else 0
    for path in write():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

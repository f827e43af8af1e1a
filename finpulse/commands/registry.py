"""``finpulse registry``: list, register, promote and roll back model versions; pick the shadow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from finpulse.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("registry", help="model versions: list, add, promote, rollback, shadow")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="all model versions, newest first")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add = actions.add_parser("add", help="register a trained artifact as a challenger")
    add.add_argument("artifact", type=Path, help="artifact directory written by `finpulse train`")
    add.add_argument("--promote", action="store_true", help="make it the champion at once")
    promote = actions.add_parser("promote", help="make a version the champion")
    promote.add_argument("version")
    actions.add_parser("rollback", help="re-instate the previous champion")
    shadow = actions.add_parser(
        "shadow", help="run a version in shadow beside the champion (--off: stop)",
        description="Scorers load the shadow version beside the champion at their next check, "
                    "score the live stream with it and store its scores apart: alerts never "
                    "see them. Compare with `finpulse query shadow`.")
    which = shadow.add_mutually_exclusive_group(required=True)
    which.add_argument("version", nargs="?", help="a registered version, not the champion")
    which.add_argument("--off", action="store_true", help="stop running a shadow model")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage import Storage
    from finpulse.storage.registry import ModelRegistry
    from models.artifact import read_manifest

    storage = Storage(settings.database_url)
    try:
        storage.migrate()
        registry = ModelRegistry(storage)
        if args.action == "list":
            versions = registry.list()
            if args.json:
                print(json.dumps([_as_dict(v) for v in versions], default=str, indent=2))
            for v in [] if args.json else versions:
                metrics = v.metrics or {}
                f1 = metrics.get("test_macro_f1", metrics.get("macro_f1"))
                f1_text = f"{f1:.3f}" if isinstance(f1, (int, float)) else "-"
                status = f"{v.status}+shadow" if v.shadow else v.status
                print(f"{status:17} {v.version:40} {v.method:5} test macro-F1 {f1_text}  {v.artifact_path}")
            if not versions and not args.json:
                print("no model versions registered (finpulse registry add DIR)")
        elif args.action == "add":
            manifest = read_manifest(args.artifact)
            registry.register(
                manifest["version"],
                base=manifest["base"],
                method=manifest["method"],
                metrics=manifest.get("metrics", {}),
                artifact_path=str(args.artifact.resolve()),
                trainable_params=manifest.get("trainable_params"),
            )
            print(f"registered {manifest['version']} as challenger")
            if args.promote:
                registry.promote(manifest["version"])
                print(f"promoted {manifest['version']} to champion")
        elif args.action == "shadow":
            previous = registry.set_shadow(None if args.off else args.version)
            if args.off:
                print(f"no shadow model (was: {previous or 'none'}); scorers drop it at their next check")
            else:
                print(f"{args.version} runs in shadow (was: {previous or 'none'}); scorers load "
                      "it at their next check")
        elif args.action == "promote":
            registry.promote(args.version)
            print(f"promoted {args.version} to champion; scorers switch at their next check")
        else:
            restored = registry.rollback()
            print(f"rolled back: {restored.version} is champion again")
    finally:
        storage.dispose()
    return 0


def _as_dict(version: object) -> dict:
    if hasattr(version, "model_dump"):
        return version.model_dump()
    return dict(vars(version))

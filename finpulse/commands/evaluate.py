"""``finpulse eval``: score a labelled CSV with a model and report accuracy, F1, calibration, speed."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from finpulse.settings import Settings

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``eval`` subcommand."""
    parser = subparsers.add_parser(
        "eval", help="evaluate a model on a labelled text,label CSV",
        description="Score text,label CSV files with a model artifact and print accuracy, "
                    "macro/weighted F1, per-class precision/recall/F1, the confusion matrix, "
                    "calibration (ECE) and throughput.")
    parser.add_argument("--data", action="append", required=True, metavar="CSV",
                        help="text,label CSV file (repeat for several)")
    parser.add_argument("--model", metavar="DIR",
                        help="artifact directory (default: settings' model path, else the bundled model)")
    parser.add_argument("--split", choices=["all", "train", "validation", "test"], default="all",
                        help="keep only the rows of this split of the model's split.csv "
                             "(e.g. test: the held-out rows the model never trained on)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "int8"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Evaluate and print the report."""
    from finpulse.errors import DataError
    from models import DEFAULT_MODEL_DIR
    from models.data import read_labelled_csv, read_split, select_split, text_key
    from models.evaluate import evaluate_engine
    from models.inference import SentimentEngine

    model_dir = Path(args.model) if args.model else (settings.model.path or DEFAULT_MODEL_DIR)
    files = {path: read_labelled_csv(path) for path in args.data}
    engine = SentimentEngine.load(
        model_dir, device=args.device or settings.model.device,
        dtype=args.dtype or settings.model.dtype, max_length=settings.model.max_length,
        batch_tokens=settings.model.batch_tokens, workers=settings.model.workers)
    split_file = Path(model_dir) / "split.csv"
    split = read_split(split_file) if split_file.is_file() else None
    if args.split != "all" and split is None:
        raise DataError(f"--split {args.split}: the model has no split.csv ({split_file})")
    # Each row keeps its file's stem as its source (news or social for a source-token model).
    rows: list[tuple[str, str]] = []
    sources: list[str] = []
    seen: set[str] = set()
    for path, file_rows in files.items():
        if split is not None and args.split != "all":
            # select_split keeps a text once; so does this loop across files.
            file_rows = [row for row in select_split(file_rows, split, args.split)
                         if text_key(row[0]) not in seen]
            seen.update(text_key(text) for text, _ in file_rows)
        rows.extend(file_rows)
        sources.extend([Path(path).stem] * len(file_rows))
    if args.split != "all":
        if not rows:
            raise DataError(f"none of the rows in {', '.join(args.data)} are in the model's "
                            f"{args.split} split")
    overlap = sum(1 for text, _ in rows
                  if split and split.get(text_key(text), {}).get("split") == "train")
    if overlap:
        logger.warning("%d of %d rows were in the model's training split; the scores are "
                       "optimistic (use --split test)", overlap, len(rows))
    report = evaluate_engine(engine, rows, sources=sources)
    report.update(data=list(args.data), split=args.split, train_overlap=overlap,
                  device=engine.info["device"])
    if args.json:
        print(json.dumps(report))
    else:
        print(_table(report))
    return 0


def _table(report: dict[str, Any]) -> str:
    labels = report["labels"]
    lines = [
        f"model      {report['model_version']} ({report['device']}, {report['dtype']})",
        f"rows       {report['n']} (split: {report['split']}, in training split: "
        f"{report['train_overlap']})",
        f"accuracy   {report['accuracy']:.4f}",
        f"macro-F1   {report['macro_f1']:.4f}",
        f"weighted-F1 {report['weighted_f1']:.4f}",
        f"ECE        {report['ece']:.4f}",
        f"throughput {report['texts_per_s']:.0f} texts/s",
        "",
        f"{'class':<10} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}",
    ]
    for label in labels:
        c = report["per_class"][label]
        lines.append(f"{label:<10} {c['precision']:>9.4f} {c['recall']:>7.4f} {c['f1']:>7.4f} "
                     f"{c['support']:>8}")
    lines += ["", "confusion (rows gold, columns predicted)",
              " " * 10 + "".join(f"{label:>10}" for label in labels)]
    for label, row in zip(labels, report["confusion"]):
        lines.append(f"{label:<10}" + "".join(f"{count:>10}" for count in row))
    return "\n".join(lines)

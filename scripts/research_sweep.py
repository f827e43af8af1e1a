"""Research sweep: train a list of named configurations, score each on one test split and
the out-of-domain sets, and append one JSON line per run as soon as it ends.

    PYTHONPATH=$PWD python scripts/research_sweep.py --out rows.jsonl \\
        [--configs default|tiny] [--file scripts/research_sweep.yaml] [--data-dir DIR] \\
        [--device auto|cpu|cuda] [--jobs N] [--only NAME,...] [--max-seconds S] \\
        [--base DIR] [--work DIR] [--keep] [--list]

The YAML file holds named sets (``default``, ``tiny``); each set has

- ``split``: the data and split parameters of the test split every run is scored on. The
  default set uses ``models/default``'s (its three files, seed 13, 10% validation, 10%
  test) and checks the test keys against ``check`` (``models/default/split.csv``); a
  mismatch stops the sweep before any training. ``limit`` (smoke tests only) scores on a
  seeded sample of that many validation and test texts, and as many of each OOD set.
- ``common``: ``TrainConfig`` fields shared by the set's runs (``data`` is not set: the
  split decides what is trained on).
- ``on_cuda``: fields that replace ``common``'s when the device is CUDA (bigger batches).
- ``runs``: ``{name: {TrainConfig fields}}``. Two sweep-only keys: ``extra_train`` (files
  under ``--data-dir`` added to the training split only, each ``{file, first}`` to take
  its first rows) and ``shots`` (train on that many seeded examples per class).
- ``fewshot``: a curve, expanded into runs named ``fs_<method>_<shots>_s<seed>``: for each
  ``methods`` entry, each ``shots`` entry (its value: fields for that size, e.g. epochs)
  and each of ``seeds``. A few-shot run trains on ``shots`` examples per class drawn
  (seeded, stratified by label) from the training split and stops early on as many drawn
  from the validation split (at most its rarest class's count): a true few-shot setting,
  with no large labelled dev set.

Every run is scored on the same held-out test split (accuracy, macro-F1, per-class F1),
then on the out-of-domain checks of ``scripts/ood_check.py`` (FinEntity 3-class,
StockEmotions last 1,000 rows binary). A row is appended (and flushed) to ``--out`` when
its run ends, so a killed sweep keeps its finished rows. ``--jobs N`` trains N runs at once
in separate processes (a small encoder leaves a GPU mostly idle with one). Rows come in
the order runs end; ``--max-seconds`` stops starting new runs after that many seconds.
Research tooling (docs/model-experiments.md); it never changes ``models/default``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from finpulse.errors import ConfigError, DataError, FinpulseError  # noqa: E402

DEFAULT_FILE = Path(__file__).with_name("research_sweep.yaml")
DATA_DIR = Path("/work/shared/data")
SET_KEYS = {"split", "common", "on_cuda", "runs", "fewshot"}
RUN_KEYS = {"extra_train", "shots"}

logger = logging.getLogger("research_sweep")


def load_set(file: Path, name: str) -> dict[str, Any]:
    """Read one named set from the sweep YAML file.

    Raises:
        ConfigError: the file or set is missing, or the set has unknown keys.
    """
    if not file.is_file():
        raise ConfigError(f"--file: {file} not found", field="file")
    try:
        sets = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML ({exc})", field="file") from exc
    if name not in sets:
        raise ConfigError(f"--configs: no set {name!r} in {file} (sets: "
                          f"{', '.join(sorted(sets))})", field="configs")
    chosen = sets[name] or {}
    unknown = sorted(set(chosen) - SET_KEYS)
    if unknown:
        raise ConfigError(f"{file}: set {name!r} has unknown key(s) {', '.join(unknown)}",
                          field="configs")
    if "split" not in chosen:
        raise ConfigError(f"{file}: set {name!r} has no split", field="configs")
    return chosen


def expand_runs(chosen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Turn a set into ``{name: run fields}`` in run order: ``runs``, then the few-shot curve.

    A few-shot run is named ``fs_<method>_<shots>_s<seed>``; its fields are the method's,
    then the shot size's, then ``shots`` and ``seed``. The curve runs size by size, seed by
    seed, every method at each.

    Raises:
        ConfigError: a name appears twice or a run is not a mapping.
    """
    runs: dict[str, dict[str, Any]] = {}
    for name, fields in (chosen.get("runs") or {}).items():
        if fields is not None and not isinstance(fields, dict):
            raise ConfigError(f"run {name!r}: expected a mapping of options", field=str(name))
        runs[str(name)] = dict(fields or {})
    curve = chosen.get("fewshot")
    if curve:
        methods = curve.get("methods") or {}
        sizes = curve.get("shots") or {}
        if isinstance(sizes, list):
            sizes = {size: {} for size in sizes}
        # Both methods at each size and seed before the next: a sweep cut short by
        # --max-seconds keeps comparable rows.
        for shots, size_fields in sizes.items():
            for seed in curve.get("seeds") or [13]:
                for method, method_fields in methods.items():
                    name = f"fs_{method}_{shots}_s{seed}"
                    if name in runs:
                        raise ConfigError(f"run {name!r} is defined twice", field=name)
                    runs[name] = {**(method_fields or {}), **(size_fields or {}),
                                  "shots": int(shots), "seed": int(seed)}
    return runs


def run_config(chosen: dict[str, Any], fields: dict[str, Any], *, cuda: bool,
               base: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge common, CUDA and run fields; split off the sweep-only keys.

    Returns:
        ``(TrainConfig fields, sweep-only fields)``.
    """
    merged = {**(chosen.get("common") or {})}
    if cuda:
        merged.update(chosen.get("on_cuda") or {})
    merged.update(fields)
    if base:
        merged["base"] = base
    merged.setdefault("progress", False)
    sweep = {key: merged.pop(key) for key in RUN_KEYS if key in merged}
    return merged, sweep


def build_split(split_spec: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """Read and split the data every run is scored on; check the test keys if asked.

    Returns:
        ``{"split": {train, validation, test}, "data": [paths], "check": str | None,
        "dataset": Dataset}``.

    Raises:
        DataError: a file is missing, or the test split differs from the ``check`` file's.
    """
    from models.data import load_dataset, read_split, split_examples

    paths = [str(data_dir / name) for name in split_spec["data"]]
    dataset = load_dataset(paths)
    split = split_examples(dataset.examples, seed=int(split_spec.get("seed", 13)),
                           validation=float(split_spec.get("validation", 0.1)),
                           test=float(split_spec.get("test", 0.1)))
    check = split_spec.get("check")
    if check:
        reference = read_split(ROOT / check)
        want = {key for key, row in reference.items() if row["split"] == "test"}
        got = {ex.key for ex in split["test"]}
        if want != got:
            raise DataError(f"the test split ({len(got)} texts) is not {check}'s ({len(want)}): "
                            f"{len(got - want)} extra, {len(want - got)} missing")
    limit = split_spec.get("limit")
    if limit:
        # Smoke tests only: score on a seeded sample of the (checked) split.
        for name in ("validation", "test"):
            if len(split[name]) > int(limit):
                split[name] = random.Random(f"limit:{name}").sample(split[name], int(limit))
        check = f"{check} (sample of {limit})" if check else None
    return {"split": split, "data": paths, "check": check, "limit": limit}


def read_extra(data_dir: Path, spec: list[dict[str, Any]]) -> list[Any]:
    """Examples from ``extra_train`` files (first rows only where ``first`` is given)."""
    from models.data import Example, read_labelled_csv, text_key

    examples = []
    seen: set[str] = set()
    for item in spec:
        path = data_dir / item["file"]
        rows = read_labelled_csv(path)
        if item.get("first"):
            rows = rows[: int(item["first"])]
        for text, label in rows:
            key = text_key(text)
            if key not in seen:
                seen.add(key)
                examples.append(Example(text, label, key, (path.stem,)))
    return examples


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train and score one run (in a worker process); returns the row, or a skip/error note."""
    if job["deadline"] is not None and time.time() > job["deadline"]:
        return {"name": job["name"], "skipped": "max-seconds reached"}
    _setup_worker(job)
    import torch

    from models.config import TrainConfig
    from models.data import few_shot_sample
    from models.inference import SentimentEngine, resolve_device
    from models.train import train_on
    from ood_check import ood_report

    name, work = job["name"], Path(job["work"]) / job["name"]
    started = time.time()
    try:
        config = TrainConfig.from_dict(job["config"])
        # Teachers named relative to the repository (models/default) work from any directory.
        config.teacher = [str(ROOT / item) for item in config.teacher]
        sweep = job["sweep"]
        split = job["split"]
        train_set, validation = list(split["train"]), list(split["validation"])
        if sweep.get("shots"):
            train_set = few_shot_sample(train_set, sweep["shots"], config.seed)
            # As many per class for early stopping, capped by the split's rarest class.
            rarest = min(Counter(ex.label for ex in validation).values())
            validation = few_shot_sample(validation, min(sweep["shots"], rarest), config.seed)
        elif config.max_train_examples and len(train_set) > config.max_train_examples:
            train_set = random.Random(config.seed).sample(train_set, config.max_train_examples)
        extra = read_extra(Path(job["data_dir"]), sweep.get("extra_train") or [])
        train_set += extra
        config.data = job["data"] + [str(Path(job["data_dir"]) / item["file"])
                                     for item in sweep.get("extra_train") or []]
        if work.exists():
            shutil.rmtree(work)
        manifest = train_on(config, work, train_set, validation, split["test"],
                            split={"train": train_set, "validation": validation,
                                   "test": split["test"]}, device=job["device"])
        metrics = json.loads((work / "metrics.json").read_text(encoding="utf-8"))
        engine = SentimentEngine.load(work, device=job["device"], dtype="auto")
        ood = ood_report(engine, Path(job["data_dir"]) / "extra", limit=job["limit"])
        device = resolve_device(job["device"])
        test = metrics["test"]
        row = {
            "name": name,
            "set": job["set"],
            "test": {"n": test["n"], "accuracy": round(test["accuracy"], 4),
                     "macro_f1": round(test["macro_f1"], 4),
                     "per_class_f1": {k: round(v["f1"], 4) for k, v in test["per_class"].items()},
                     "dtype": test["dtype"]},
            "test_fp32_macro_f1": (round(metrics["test_fp32"]["macro_f1"], 4)
                                   if "test_fp32" in metrics else None),
            "test_by_source_macro_f1": {k: round(v["macro_f1"], 4)
                                        for k, v in metrics["test_by_source"].items()},
            "ood": {"finentity": _rounded(ood["finentity"]),
                    "stockemotions": _rounded(ood["stockemotions"])},
            "ood_trained_on": sorted({Path(item["file"]).stem
                                      for item in sweep.get("extra_train") or []}),
            "train_seconds": manifest["train_seconds"],
            "run_seconds": round(time.time() - started, 1),
            "epochs_run": manifest["epochs_run"],
            "best_epoch": manifest["best_epoch"],
            "train_examples": len(train_set),
            "extra_examples": len(extra),
            "shots": sweep.get("shots"),
            "trainable_params": manifest["trainable_params"],
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "jobs": job["jobs"],
            "test_split": job["check"] or "own",
            "version": manifest["version"],
            "config": {**config.to_dict(), **{k: v for k, v in sweep.items()}},
        }
    except FinpulseError as exc:
        return {"name": name, "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # noqa: BLE001 - one broken run must not end the sweep
        return {"name": name, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=5)}
    finally:
        if not job["keep"]:
            shutil.rmtree(work, ignore_errors=True)
    return row


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else _rounded(v) if isinstance(v, dict)
                else v) for k, v in values.items()}


REQUIRED = ("torch", "transformers", "peft", "safetensors", "numpy", "yaml", "pydantic", "tqdm")


def preflight(base: str) -> None:
    """Fail in one line, before any training, when a package or the base encoder is missing.

    Raises:
        ConfigError: a required package cannot be imported, or the base cannot be loaded.
    """
    import importlib.util

    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"missing Python package(s): {', '.join(missing)}", field="packages")
    if importlib.util.find_spec("matplotlib") is None:
        logger.warning("matplotlib is missing: runs write no confusion.png")
    from models.network import load_encoder

    load_encoder(base)  # raises ModelError in one line (e.g. no bundled encoder: use --base)


def _setup_worker(job: dict[str, Any]) -> None:
    import importlib.util

    import torch

    scripts = str(Path(__file__).resolve().parent)
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    torch.set_num_threads(job["threads"])
    logging.basicConfig(level=logging.WARNING, format=f"[{job['name']}] %(message)s")
    if importlib.util.find_spec("matplotlib") is None:
        # The confusion-matrix picture is the only use of matplotlib in training; a bare
        # GPU machine may lack it, and the sweep's rows do not need it.
        import models.train

        models.train.plot_confusion = lambda *args, **kwargs: None  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", required=True, help="JSON-lines file rows are appended to")
    parser.add_argument("--configs", default="default", help="set name in --file")
    parser.add_argument("--file", default=str(DEFAULT_FILE), help="the sweep YAML")
    parser.add_argument("--data-dir", default=str(DATA_DIR),
                        help="replaces /work/shared/data (with extra/ inside)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at once (default: 4 on CUDA, 1 on the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("--only", help="comma-separated run names")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="start no new run after this many seconds")
    parser.add_argument("--base", help="base encoder directory for every run")
    parser.add_argument("--work", help="where artifacts go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep each run's artifact")
    parser.add_argument("--list", action="store_true", help="print the run names and stop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        return _sweep(args)
    except FinpulseError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _sweep(args: argparse.Namespace) -> int:
    from models.inference import resolve_device

    started = time.time()
    chosen = load_set(Path(args.file), args.configs)
    runs = expand_runs(chosen)
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        missing = [name for name in wanted if name not in runs]
        if missing:
            raise ConfigError(f"--only: no run named {', '.join(missing)} in set "
                              f"{args.configs!r}", field="only")
        runs = {name: runs[name] for name in runs if name in wanted}
    if args.list:
        print("\n".join(runs))
        return 0
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    jobs = args.jobs or (4 if cuda else 1)
    if jobs < 1:
        raise ConfigError("--jobs: at least 1", field="jobs")
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    data_dir = Path(args.data_dir)
    for needed in (data_dir / "extra" / "finentity.csv", data_dir / "extra" / "stockemotions.csv"):
        if not needed.is_file():
            raise DataError(f"--data-dir: {needed} not found")
    from models.config import TrainConfig

    configs = {}
    for name, fields in runs.items():
        config, sweep = run_config(chosen, fields, cuda=cuda, base=args.base)
        try:
            TrainConfig.from_dict(config)
        except ConfigError as exc:
            raise ConfigError(f"run {name!r}: {exc}", field=exc.field) from exc
        for item in sweep.get("extra_train") or []:
            if not (data_dir / item["file"]).is_file():
                raise DataError(f"run {name!r}: extra_train file {data_dir / item['file']} "
                                "not found")
        configs[name] = (config, sweep)
    for base in sorted({TrainConfig.from_dict(config).base for config, _ in configs.values()}):
        preflight(base)
    prepared = build_split(chosen["split"], data_dir)
    split = prepared["split"]
    logger.info("%d runs on %s (%d at once); test split %d texts%s", len(configs), device, jobs,
                len(split["test"]), f" = {prepared['check']}'s" if prepared["check"] else "")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    deadline = started + args.max_seconds if args.max_seconds else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = failed = skipped = 0
    context = get_context("spawn")  # CUDA cannot be shared with forked workers
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool, \
            out.open("a", encoding="utf-8") as sink:
        pending: dict[Future[dict[str, Any]], str] = {}
        for name, (config, sweep) in configs.items():
            pending[pool.submit(train_one, {
                "name": name, "set": args.configs, "config": config, "sweep": sweep,
                "split": split, "data": prepared["data"], "check": prepared["check"],
                "limit": prepared["limit"],
                "data_dir": str(data_dir), "device": str(device), "work": str(work),
                "keep": args.keep, "deadline": deadline, "jobs": jobs, "threads": threads,
            })] = name
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name = pending.pop(future)
                try:
                    row = future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. a worker killed (out of memory)
                    row = {"name": name, "error": f"{type(exc).__name__}: {exc}"}
                if "skipped" in row:
                    skipped += 1
                    continue
                if "error" in row:
                    failed += 1
                    logger.error("%s failed: %s", row["name"], row["error"])
                    row["failed"] = True
                else:
                    written += 1
                    logger.info("%s: test acc %.3f macro-F1 %.3f | FinEntity F1 %.3f | "
                                "StockEmotions bin. F1 %.3f | %.0f s train", row["name"],
                                row["test"]["accuracy"], row["test"]["macro_f1"],
                                row["ood"]["finentity"]["macro_f1"],
                                row["ood"]["stockemotions"]["binary_macro_f1"],
                                row["train_seconds"])
                row.setdefault("host", platform.node())
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("done in %.0f s: %d rows, %d failed, %d not started (max-seconds) -> %s",
                time.time() - started, written, failed, skipped, out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

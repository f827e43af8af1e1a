"""The model artifact: a versioned directory that fully describes one trained classifier.

Layout::

    manifest.json        version, created, base (+ architecture fingerprint), method, labels,
                         pooling, max_length, parameter counts, metrics, sha256 of every
                         file needed to load the model; a distilled student's also lists
                         ``student_layers``, the base's blocks it keeps
    train_config.json    the TrainConfig that produced it
    adapter/             PEFT adapter (lora, ia3, prompt, ptuning): adapter_config.json +
                         adapter_model.safetensors (P-tuning saves the prompt its MLP makes)
    encoder.safetensors  full fine-tuning only: the whole encoder (large; never committed)
    head.safetensors     the classification head
    split.csv            key (sha1 of normalised text), split, label, sources; no text
    metrics.json, epochs.jsonl, confusion.png, MODEL_CARD.md

The tokenizer is referenced through ``base`` (it is the base encoder's, unchanged).
Loading checks the checksums and the base's architecture and raises ``ModelError`` on
any mismatch, so a corrupt or foreign artifact never scores silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finpulse.errors import ConfigError, ModelError
from finpulse.schemas import LABELS
from models.config import PROMPT_METHODS
from models.network import (
    DEFAULT_BASE,
    SentimentClassifier,
    base_fingerprint,
    head_path,
    keep_layers,
    load_encoder,
    quiet_peft,
    virtual_tokens,
)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
ADAPTER_DIR = "adapter"
ENCODER_FILE = "encoder.safetensors"
PEFT_METHODS = ("lora", "ia3", *PROMPT_METHODS)


def sha256_file(path: Path) -> str:
    """Return the SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read an artifact's manifest.

    Args:
        path: the artifact directory (or its ``manifest.json``).

    Returns:
        The manifest: ``version``, ``created`` (ISO 8601), ``base``, ``method``, ``labels``,
        ``metrics`` (dict), ``trainable_params``, ``total_params``, ``files`` and more.

    Raises:
        ModelError: the directory or manifest is missing, unreadable or incomplete.
    """
    path = Path(path)
    file = path if path.name == MANIFEST else path / MANIFEST
    if not file.is_file():
        raise ModelError(f"not a model artifact (no {MANIFEST}): {path}")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"corrupt manifest {file}: {exc}") from exc
    required = ("format", "version", "created", "base", "method", "labels", "metrics",
                "trainable_params", "files")
    missing = [key for key in required if not isinstance(manifest, dict) or key not in manifest]
    if missing:
        raise ModelError(f"corrupt manifest {file}: missing {', '.join(missing)}")
    if manifest["format"] != FORMAT:
        raise ModelError(f"{file}: artifact format {manifest['format']} is not supported ({FORMAT})")
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (sorted keys, so diffs stay small)."""
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (directory / MANIFEST).write_text(text, encoding="utf-8")


def update_manifest(directory: Path, **values: Any) -> dict[str, Any]:
    """Set top-level manifest keys (e.g. ``metrics``) without touching the checksums."""
    manifest = read_manifest(directory)
    manifest.update(values)
    write_manifest(directory, manifest)
    return manifest


def save_artifact(
    directory: Path,
    model: SentimentClassifier,
    *,
    base: str,
    method: str,
    max_length: int,
    trainable_params: int,
    total_params: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save a trained classifier's weights and manifest into ``directory``.

    Args:
        directory: the artifact directory (created if needed; other files are kept).
        model: the trained classifier; its encoder is a PEFT model for lora/ia3.
        base: the base encoder name as given to training.
        method: ``lora``, ``ia3``, ``prompt``, ``ptuning`` or ``full``.
        max_length: the training max length (a default for inference).
        trainable_params, total_params: parameter counts during training.
        extra: more manifest keys (e.g. ``train_seconds``).

    Returns:
        The manifest written.
    """
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    if method in PEFT_METHODS:
        adapter = directory / ADAPTER_DIR
        peft_config = model.encoder.peft_config["default"]
        # Record the portable base name rather than this machine's directory.
        peft_config.base_model_name_or_path = base
        model.encoder.save_pretrained(str(adapter), save_embedding_layers=False)
        (adapter / "README.md").unlink(missing_ok=True)
        files += sorted(p for p in adapter.iterdir() if p.is_file())
        fingerprint = base_fingerprint(model.encoder.get_base_model())
    else:
        state = {k: v.detach().contiguous().cpu() for k, v in model.encoder.state_dict().items()}
        save_file(state, str(directory / ENCODER_FILE))
        files.append(directory / ENCODER_FILE)
        fingerprint = base_fingerprint(model.encoder)
    head = {k: v.detach().contiguous().cpu() for k, v in model.head.state_dict().items()}
    save_file(head, str(head_path(directory)))
    files.append(head_path(directory))
    checksums = {str(p.relative_to(directory)): sha256_file(p) for p in files}
    created = datetime.now(timezone.utc).replace(microsecond=0)
    weights_hash = hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": f"{_slug(base)}-{method}-{created:%Y-%m-%d}-{weights_hash[:8]}",
        "created": created.isoformat(),
        "base": base,
        "base_fingerprint": fingerprint,
        "tokenizer": base,
        "method": method,
        "labels": list(LABELS),
        "pooling": "mean",
        **({"virtual_tokens": virtual_tokens(model.encoder)} if method in PROMPT_METHODS else {}),
        "max_length": max_length,
        "trainable_params": trainable_params,
        "total_params": total_params,
        "files": checksums,
        "metrics": {},
        **(extra or {}),
    }
    write_manifest(directory, manifest)
    return manifest


def load_classifier(
    directory: str | Path, *, merge: bool = True, verify: bool = True
) -> tuple[SentimentClassifier, Any, dict[str, Any]]:
    """Load a classifier artifact onto its base encoder.

    Args:
        directory: the artifact directory.
        merge: fold a PEFT adapter into the base weights (faster inference); False keeps
            the adapter as separate modules (the two give the same logits up to rounding).
            Prompt-tuning and P-tuning adapters have nothing to merge and always stay
            wrapped (their virtual tokens are added to every input).
        verify: check file checksums against the manifest.

    Returns:
        ``(model, tokenizer, manifest)``; the model is on the CPU in eval mode, fp32.

    Raises:
        ModelError: the artifact is missing, corrupt (checksum mismatch, unreadable weights)
            or does not fit its base encoder.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if sorted(manifest["labels"]) != sorted(LABELS):
        raise ModelError(f"{directory}: labels {manifest['labels']} are not {list(LABELS)}")
    if verify:
        verify_checksums(directory, manifest)
    encoder, tokenizer = load_encoder(manifest["base"])
    if manifest.get("student_layers"):
        # A distilled student: the same base with only these blocks (see TrainConfig).
        try:
            keep_layers(encoder, manifest["student_layers"])
        except ConfigError as exc:
            raise ModelError(f"{directory}: {exc}") from exc
    expected = manifest.get("base_fingerprint") or {}
    actual = base_fingerprint(encoder)
    diff = {k: (v, actual.get(k)) for k, v in expected.items() if actual.get(k) != v}
    if diff:
        detail = ", ".join(f"{k} {want} != {got}" for k, (want, got) in diff.items())
        raise ModelError(f"{directory}: base encoder {manifest['base']!r} does not match ({detail})")
    method = manifest["method"]
    try:
        if method in PEFT_METHODS:
            from peft import PeftModel

            with quiet_peft():
                peft_model = PeftModel.from_pretrained(encoder, str(directory / ADAPTER_DIR))
            if merge and method not in PROMPT_METHODS:
                encoder = peft_model.merge_and_unload()
            else:
                encoder = peft_model
        elif method == "full":
            _load_weights(encoder, directory / ENCODER_FILE)
        else:
            raise ModelError(f"{directory}: unknown method {method!r}")
        model = SentimentClassifier(encoder, len(manifest["labels"]))
        _load_weights(model.head, head_path(directory))
    except ModelError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"{directory}: cannot load {method} weights: {exc}") from exc
    model.eval()
    return model, tokenizer, manifest


def verify_checksums(directory: Path, manifest: dict[str, Any]) -> None:
    """Raise ``ModelError`` if a file listed in the manifest is missing or changed."""
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise ModelError(f"{directory}: missing artifact file {name}")
        if sha256_file(path) != expected:
            raise ModelError(f"{directory}: {name} is corrupt (checksum mismatch)")


def _load_weights(module: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = load_file(str(path))
    # strict: a missing or unexpected tensor means the file belongs to another model.
    module.load_state_dict(state, strict=True)


def _slug(base: str) -> str:
    if base == DEFAULT_BASE:
        return "minilm"
    name = Path(base.rstrip("/")).name.lower()
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:24] or "model"

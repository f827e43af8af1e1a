"""The inference engine: scores batches of texts with a trained classifier artifact.

Speed comes from four things, each measured by ``finpulse bench``: PEFT adapters are merged
into the base weights (no extra adapter matmuls); texts are sorted by length and batched by
a budget of padded tokens; everything runs under ``torch.inference_mode``; weights are bf16
on CUDA and on CPUs with native bf16 instructions (AMX / AVX512-BF16), fp32 elsewhere.
Texts longer than ``max_length`` tokens are split into chunks whose class probabilities
are averaged, weighted by chunk length, so nothing is silently truncated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finpulse.errors import ConfigError, ModelError
from finpulse.schemas import Prediction
from models import DEFAULT_MODEL_DIR
from models.artifact import load_classifier
from models.batching import budget_batches, fixed_batches, pad
from models.network import SentimentClassifier

logger = logging.getLogger(__name__)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AMX or AVX512-BF16)."""
    capability = torch.backends.cpu.get_cpu_capability().upper()
    if "AMX" in capability:
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_device(device: str) -> torch.device:
    """Map ``auto``/``cpu``/``cuda`` to a torch device.

    Raises:
        ConfigError: unknown device, or ``cuda`` without a CUDA device.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was requested but no CUDA device is available", field="device")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device: {device!r} is not auto, cpu or cuda", field="device")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Map ``auto``/``float32``/``bfloat16`` to a torch dtype for ``device``.

    Raises:
        ConfigError: unknown dtype name.
    """
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ConfigError(f"dtype: {dtype!r} is not auto, float32 or bfloat16", field="dtype")
    return names[dtype]


class SentimentEngine:
    """A loaded classifier that turns texts into ``Prediction`` records.

    Build it with ``SentimentEngine.load``. Not thread-safe; use one per worker.

    Attributes:
        version: the artifact's stable id (from its manifest).
        info: base, method, device, dtype, labels, max_length, batch_tokens.
        manifest: the artifact's full manifest.
    """

    def __init__(
        self,
        model: SentimentClassifier,
        tokenizer: Any,
        manifest: dict[str, Any],
        *,
        device: torch.device,
        dtype: torch.dtype,
        max_length: int,
        batch_tokens: int,
    ) -> None:
        if max_length < 8:
            raise ConfigError("max_length: at least 8 tokens", field="max_length")
        if batch_tokens < max_length:
            raise ConfigError("batch_tokens: must be at least max_length", field="batch_tokens")
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.labels: tuple[str, ...] = tuple(manifest["labels"])
        self.device = device
        self.dtype = dtype
        self.max_length = min(max_length, _position_limit(model))
        self.batch_tokens = batch_tokens
        self.version: str = manifest["version"]
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._index = {label: i for i, label in enumerate(self.labels)}
        # The tokenizer's own special tokens around an empty text: [CLS] [SEP] for BERT.
        specials = tokenizer("", add_special_tokens=True)["input_ids"]
        self._prefix, self._suffix = specials[:1], specials[1:]

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_length: int = 256,
        batch_tokens: int = 16384,
        merge: bool = True,
    ) -> SentimentEngine:
        """Load an artifact for inference.

        Args:
            path: artifact directory; None loads the bundled default (``models/default``).
            device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
            dtype: ``auto`` (bf16 where the hardware supports it), ``float32`` or ``bfloat16``.
            max_length: tokens per chunk; longer texts are scored in chunks.
            batch_tokens: upper bound on padded tokens per forward pass.
            merge: merge a PEFT adapter into the base weights (keep True except to compare).

        Returns:
            The engine, ready to ``predict``.

        Raises:
            ModelError: the artifact is missing, corrupt or does not match its base encoder.
            ConfigError: an invalid device, dtype, max_length or batch_tokens.
        """
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        model, tokenizer, manifest = load_classifier(path or DEFAULT_MODEL_DIR, merge=merge)
        engine = cls(model, tokenizer, manifest, device=torch_device, dtype=torch_dtype,
                     max_length=max_length, batch_tokens=batch_tokens)
        logger.info("loaded model %s on %s (%s)", engine.version, torch_device, torch_dtype)
        return engine

    @property
    def info(self) -> dict[str, Any]:
        """What is loaded and how it runs."""
        return {
            "version": self.version,
            "base": self.manifest["base"],
            "method": self.manifest["method"],
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "labels": list(self.labels),
            "max_length": self.max_length,
            "batch_tokens": self.batch_tokens,
        }

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify texts.

        Args:
            texts: the texts, any length (long ones are scored in chunks).

        Returns:
            One ``Prediction`` per text, in input order; ``score`` = P(positive) - P(negative).
        """
        probabilities = self.predict_proba(texts)
        neg, pos = self._index["negative"], self._index["positive"]
        predictions = []
        for row in probabilities.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            predictions.append(Prediction(
                label=self.labels[best],  # type: ignore[arg-type]
                score=min(1.0, max(-1.0, row[pos] - row[neg])),
                probabilities={label: row[i] for i, label in enumerate(self.labels)},
                confidence=min(1.0, max(0.0, row[best])),
            ))
        return predictions

    def predict_proba(
        self, texts: Sequence[str], *, sort: bool = True, batch_size: int | None = None
    ) -> np.ndarray:
        """Class probabilities, shape ``(len(texts), len(labels))``, columns in ``labels`` order.

        Args:
            texts: the texts.
            sort: length-sort and batch by token budget (the fast path). False keeps input
                order and cuts batches of ``batch_size`` (for benchmarking the naive way).
            batch_size: fixed batch size when ``sort`` is False (default 64).
        """
        if isinstance(texts, str):
            raise TypeError("predict expects a sequence of texts, not one string")
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        chunks, owners = self._chunk(texts)
        lengths = [len(chunk) for chunk in chunks]
        if sort:
            batches = budget_batches(lengths, self.batch_tokens)
        else:
            batches = fixed_batches(len(chunks), batch_size or 64)
        chunk_probs = np.zeros((len(chunks), len(self.labels)), dtype=np.float64)
        with torch.inference_mode():
            for batch in batches:
                ids, mask = pad([chunks[i] for i in batch], self._pad_id)
                logits = self.model(ids.to(self.device), mask.to(self.device))
                chunk_probs[batch] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        weights = np.asarray(lengths, dtype=np.float64)
        totals = np.zeros((len(texts), len(self.labels)))
        np.add.at(totals, owners, chunk_probs * weights[:, None])
        norm = np.zeros(len(texts))
        np.add.at(norm, owners, weights)
        return (totals / norm[:, None]).astype(np.float32)

    def _chunk(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Tokenise texts into chunks of at most ``max_length`` tokens (with special tokens)."""
        prefix, suffix = self._prefix, self._suffix
        body = self.max_length - len(prefix) - len(suffix)
        encoded = self.tokenizer(list(texts), add_special_tokens=False, truncation=False,
                                 verbose=False)["input_ids"]
        chunks: list[list[int]] = []
        owners: list[int] = []
        for index, ids in enumerate(encoded):
            pieces = [ids[start : start + body] for start in range(0, len(ids), body)] or [[]]
            for piece in pieces:
                chunks.append(prefix + piece + suffix)
                owners.append(index)
        return chunks, np.asarray(owners, dtype=np.int64)


def _position_limit(model: SentimentClassifier) -> int:
    config = model.encoder.config
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        raise ModelError("the encoder has no max_position_embeddings")
    return limit

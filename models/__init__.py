"""The model stage: data, training (full and PEFT), evaluation, artifacts and inference.

``models`` never imports ``ingest`` or ``monitor``; it hands ``finpulse.schemas.Prediction``
records to whoever wires it (``finpulse/services``). The default classifier ships in
``models/default/`` (a LoRA adapter plus a classification head over the all-MiniLM-L6-v2
encoder); ``models.inference.SentimentEngine.load()`` loads it.
"""

from __future__ import annotations

from pathlib import Path

#: The bundled default model artifact.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"

"""Metrics against scikit-learn, calibration error by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from finpulse.errors import DataError
from models.evaluate import compute_metrics, expected_calibration_error, plot_confusion

LABELS = ["negative", "neutral", "positive"]


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    gold = rng.choice(LABELS, size=300, p=[0.2, 0.6, 0.2]).tolist()
    probabilities = rng.dirichlet([1, 1, 1], size=300)
    predicted = [LABELS[i] for i in probabilities.argmax(axis=1)]
    metrics = compute_metrics(gold, probabilities, LABELS)
    assert metrics["n"] == 300
    assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert metrics["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro"))
    assert metrics["weighted_f1"] == pytest.approx(f1_score(gold, predicted, average="weighted"))
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=LABELS)
    for i, label in enumerate(LABELS):
        assert metrics["per_class"][label] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]})
    assert metrics["confusion"] == confusion_matrix(gold, predicted, labels=LABELS).tolist()


def test_a_class_never_predicted_has_zero_precision() -> None:
    probabilities = np.array([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0]])
    metrics = compute_metrics(["negative", "neutral"], probabilities, LABELS)
    assert metrics["per_class"]["negative"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                "support": 1}
    assert metrics["accuracy"] == 0.5


def test_expected_calibration_error_by_hand() -> None:
    confidence = np.array([0.95, 0.95, 0.65, 0.65])
    correct = np.array([1.0, 1.0, 1.0, 0.0])
    # bin (0.9333, 1]: accuracy 1.0, confidence 0.95 -> gap 0.05, weight 0.5
    # bin (0.6, 0.6667]: accuracy 0.5, confidence 0.65 -> gap 0.15, weight 0.5
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == 0.0


@pytest.mark.parametrize(
    ("gold", "probabilities", "message"),
    [
        ([], np.zeros((0, 3)), "no rows"),
        (["bullish"], np.array([[0.2, 0.3, 0.5]]), "unknown label"),
        (["neutral"], np.array([[0.5, 0.5]]), "shape"),
    ],
)
def test_bad_input(gold: list, probabilities: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        compute_metrics(gold, probabilities, LABELS)


def test_confusion_plot_is_a_png(tmp_path: Path) -> None:
    metrics = compute_metrics(["negative", "positive"], np.eye(3)[[0, 2]], LABELS)
    path = plot_confusion(metrics, tmp_path / "c.png", "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

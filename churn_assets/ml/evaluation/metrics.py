"""Holdout metrics: one function, so training, evaluation and the gate agree on definitions."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

DECISION_THRESHOLD = 0.5
#: Reliability curves and the calibration error use this many equal-width probability bins.
CALIBRATION_BINS = 10


def calibration_error(
    y_true: np.ndarray, probability: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """Expected calibration error: per probability bin, |predicted - observed churners|,
    summed and divided by the customers, i.e. how far "0.4" is from four in ten on average."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    predicted = np.bincount(which, weights=p, minlength=bins)
    observed = np.bincount(which, weights=y, minlength=bins)
    return float(np.abs(predicted - observed).sum() / max(len(p), 1))


def classification_metrics(
    y_true: np.ndarray, probability: np.ndarray, threshold: float = DECISION_THRESHOLD
) -> dict[str, float]:
    """AUC, accuracy, F1, precision, recall, Brier score, log loss and calibration error."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(probability, dtype=float)
    predicted = (p >= threshold).astype(int)
    return {
        "auc": float(roc_auc_score(y, p)),
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "calibration_error": calibration_error(y, p),
    }


def confusion(
    y_true: np.ndarray, probability: np.ndarray, threshold: float = DECISION_THRESHOLD
) -> dict[str, int]:
    predicted = (np.asarray(probability) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(
        np.asarray(y_true).astype(int), predicted, labels=[0, 1]
    ).ravel()
    return {
        "true_negative": int(tn),
        "false_positive": int(fp),
        "false_negative": int(fn),
        "true_positive": int(tp),
    }

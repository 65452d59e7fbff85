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


def classification_metrics(
    y_true: np.ndarray, probability: np.ndarray, threshold: float = DECISION_THRESHOLD
) -> dict[str, float]:
    """AUC, accuracy, F1, precision, recall, Brier score and log loss of churn probabilities."""
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

"""Probability calibration: a Platt map on LightGBM's raw score, fitted on training rows only.

A retention team reads 0.4 as "four in ten such customers leave". Boosted trees rank well but
their probabilities can be off (too confident after many rounds, or shifted by sampling), so
the model logs a calibration map with itself. The map is fitted on the validation fold, which
is part of the training rows (it only chose when to stop boosting); the holdout is never used,
so the report's before/after on the holdout is an honest test of the map.

The map is a logistic function of the raw score (log-odds), two numbers: monotone, so it never
changes the ranking, the AUC or the order of a customer's reasons, and with only two
parameters it does not overfit a few hundred validation rows the way isotonic regression can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from scipy.special import expit
from scipy.stats import chi2
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from churn_assets.ml.evaluation.metrics import calibration_error
from churn_assets.ml.model.calibration_mode import CalibrationMode
from churn_assets.ml.model.features import model_inputs


class CalibratedChurnClassifier(ClassifierMixin, BaseEstimator):
    """A fitted LGBMClassifier whose probabilities go through `sigmoid(slope * raw + intercept)`.

    slope 1 and intercept 0 is LightGBM's own probability: the identity, used when the raw
    probabilities are already honest, so every model has the same shape.
    """

    def __init__(
        self, estimator: LGBMClassifier | None = None, slope: float = 1.0, intercept: float = 0.0
    ) -> None:
        self.estimator = estimator
        self.slope = slope
        self.intercept = intercept

    @property
    def _model(self) -> LGBMClassifier:
        if self.estimator is None:
            raise ValueError("CalibratedChurnClassifier needs a fitted LGBMClassifier")
        return self.estimator

    @property
    def classes_(self) -> np.ndarray:
        return self._model.classes_

    @property
    def booster_(self) -> Any:
        return self._model.booster_

    @property
    def calibrated(self) -> bool:
        return (self.slope, self.intercept) != (1.0, 0.0)

    def __sklearn_is_fitted__(self) -> bool:
        return self.estimator is not None

    def fit(self, x: Any, y: Any) -> CalibratedChurnClassifier:
        raise NotImplementedError("built from a fitted model by `calibrate`, not refitted")

    def raw_score(self, x: Any) -> np.ndarray:
        return np.asarray(self._model.predict(x, raw_score=True), dtype=np.float64)

    def calibrate_raw(self, raw: np.ndarray) -> np.ndarray:
        """Probability from raw scores; the API's fast path calls this on the booster's output."""
        return expit(self.slope * np.asarray(raw, dtype=np.float64) + self.intercept)

    def predict_proba(self, x: Any) -> np.ndarray:
        positive = self.calibrate_raw(self.raw_score(x))
        return np.column_stack([1.0 - positive, positive])

    def uncalibrated_proba(self, x: Any) -> np.ndarray:
        """LightGBM's own churn probability, for the report's before/after."""
        return expit(self.raw_score(x))

    def predict(self, x: Any) -> np.ndarray:
        return self.classes_[(self.predict_proba(x)[:, 1] >= 0.5).astype(int)]


@dataclass(frozen=True)
class CalibrationFit:
    """What was decided on the validation fold, logged with the model."""

    mode: CalibrationMode
    applied: bool
    slope: float
    intercept: float
    #: Likelihood-ratio test of "the raw probabilities are right" on the validation fold.
    p_value: float
    validation_ece_before: float
    validation_ece_after: float


def _log_likelihood(y: np.ndarray, raw: np.ndarray) -> float:
    # log sigmoid(raw) for churners, log sigmoid(-raw) for stayers, without overflow
    return float(-np.logaddexp(0.0, np.where(y == 1, -raw, raw)).sum())


def calibrate(
    model: LGBMClassifier,
    raw_validation: np.ndarray,
    y_validation: np.ndarray,
    mode: CalibrationMode,
    significance: float,
) -> tuple[CalibratedChurnClassifier, CalibrationFit]:
    """Fit the Platt map on the validation fold's raw scores (`model`'s, which training has
    already computed); keep it when asked to, or (mode auto) when the raw probabilities are
    off by more than chance explains.

    "Off" is a likelihood-ratio test of slope 1, intercept 0 against the fitted map: twice the
    log-likelihood gained is chi-squared with 2 degrees of freedom when LightGBM is already
    calibrated. A fixed tolerance on the calibration error would fire on noise: on a few
    hundred validation rows the error of perfectly calibrated scores is itself about 0.02.
    """
    y = np.asarray(y_validation).astype(int)
    raw = np.asarray(raw_validation, dtype=np.float64)
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(raw.reshape(-1, 1), y)
    slope, intercept = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    gained = _log_likelihood(y, slope * raw + intercept) - _log_likelihood(y, raw)
    p_value = float(chi2.sf(max(2.0 * gained, 0.0), df=2))
    # A slope at or below zero would reverse the ranking: a model that bad is for the gate to
    # refuse, not for a calibration map to hide.
    applied = slope > 0 and (
        mode is CalibrationMode.always or (mode is CalibrationMode.auto and p_value < significance)
    )
    if not applied:
        slope, intercept = 1.0, 0.0
    wrapped = CalibratedChurnClassifier(model, slope, intercept)
    before = calibration_error(y, expit(raw))
    after = calibration_error(y, wrapped.calibrate_raw(raw))
    return wrapped, CalibrationFit(mode, applied, slope, intercept, p_value, before, after)


def uncalibrated_probability(pipeline: Any, features: pd.DataFrame) -> np.ndarray:
    """LightGBM's own probability from a logged pipeline (equal to the output when uncalibrated)."""
    features = features[model_inputs(pipeline)]
    model = pipeline.named_steps["model"]
    if not isinstance(model, CalibratedChurnClassifier):  # versions logged before calibration
        return np.asarray(pipeline.predict_proba(features)[:, 1])
    return model.uncalibrated_proba(pipeline.named_steps["preprocess"].transform(features))

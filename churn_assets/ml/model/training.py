"""LightGBM training with early stopping on a validation fold carved from the training rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from churn_assets.ml.data.contract import Contract
from churn_assets.ml.data.splitting import features_and_target
from churn_assets.ml.evaluation import metrics
from churn_assets.ml.model.calibration import CalibrationFit, calibrate
from churn_assets.ml.model.calibration_mode import CalibrationMode
from churn_assets.ml.model.features import categorical_positions, model_inputs, output_features
from churn_assets.ml.model.hyperparameters import Hyperparameters
from churn_assets.ml.model.tuning import SearchResult, Trial, search
from churn_assets.ml.settings import ChurnSettings


@dataclass(frozen=True)
class TrainedModel:
    """The fitted preprocessor+model pipeline and what training learned about it."""

    pipeline: Pipeline
    hyperparameters: Hyperparameters
    best_iteration: int
    validation_metrics: dict[str, float]
    feature_importance: dict[str, float]
    training_rows: int
    validation_rows: int
    calibration: CalibrationFit
    tuning: SearchResult | None = None


@dataclass(frozen=True)
class TrainingChoices:
    """How the model is finished: calibration, and an optional bounded search before it."""

    calibration: CalibrationMode
    calibration_significance: float
    tuning_budget_s: float
    tuning_max_trials: int

    @classmethod
    def from_settings(cls, settings: ChurnSettings) -> TrainingChoices:
        """The platform's settings, whose defaults are written once, in `ChurnSettings`."""
        return cls(
            calibration=settings.calibration,
            calibration_significance=settings.calibration_significance,
            tuning_budget_s=settings.tuning_budget_s,
            tuning_max_trials=settings.tuning_max_trials,
        )

    @property
    def tunes(self) -> bool:
        return self.tuning_budget_s > 0


@dataclass(frozen=True)
class _Folds:
    """The training rows' fit and validation folds, already through the preprocessor."""

    x_fit: Any
    y_fit: np.ndarray
    x_validation: Any
    y_validation: np.ndarray
    categorical: list[int]


def _folds(
    preprocessor: ColumnTransformer, train: pd.DataFrame, contract: Contract, h: Hyperparameters
) -> _Folds:
    fit_rows, validation_rows = train_test_split(
        train,
        test_size=h.validation_fraction,
        random_state=h.seed,
        stratify=train[contract.target_column],
    )
    x_fit, y_fit = features_and_target(fit_rows, contract)
    x_val, y_val = features_and_target(validation_rows, contract)
    return _Folds(
        preprocessor.transform(x_fit),
        y_fit.to_numpy(),
        preprocessor.transform(x_val),
        y_val.to_numpy(),
        categorical_positions(preprocessor),
    )


def _fit(folds: _Folds, h: Hyperparameters) -> lgb.LGBMClassifier:
    model = lgb.LGBMClassifier(
        **h.lightgbm_params(),
        objective="binary",
        metric="binary_logloss",
        random_state=h.seed,
        deterministic=True,
        force_col_wise=True,
        verbose=-1,
    )
    model.fit(
        folds.x_fit,
        folds.y_fit,
        eval_X=(folds.x_validation,),
        eval_y=(folds.y_validation,),
        categorical_feature=folds.categorical,
        callbacks=[lgb.early_stopping(h.early_stopping_rounds, verbose=False)],
    )
    return model


def train_churn_model(
    preprocessor: ColumnTransformer,
    train: pd.DataFrame,
    contract: Contract,
    hyperparameters: Hyperparameters,
    choices: TrainingChoices,
    on_trial: Callable[[Trial], None] = lambda trial: None,
) -> TrainedModel:
    """Fit LightGBM on training rows, then calibrate it; the holdout is never seen here.

    The validation fold decides when to stop boosting, which trial wins a search, and the
    calibration map. `deterministic` and a fixed seed make the same data and parameters give
    the same model, and so the same metrics.
    """
    folds = _folds(preprocessor, train, contract, hyperparameters)
    tuning = None
    if choices.tunes:
        # The best trial so far, kept as it is found; ties go to the earlier trial, as in
        # `SearchResult.best`.
        best: tuple[float, lgb.LGBMClassifier, np.ndarray] | None = None

        def evaluate(candidate: Hyperparameters) -> tuple[float, float, int]:
            nonlocal best
            fitted = _fit(folds, candidate)
            scores = _validation_raw(fitted, folds)
            found = metrics.classification_metrics(folds.y_validation, expit(scores))
            if best is None or found["log_loss"] < best[0]:
                best = (found["log_loss"], fitted, scores)
            return found["log_loss"], found["auc"], _best_iteration(fitted)

        tuning = search(
            evaluate,
            hyperparameters,
            choices.tuning_budget_s,
            choices.tuning_max_trials,
            on_trial,
        )
        hyperparameters = tuning.best.hyperparameters
        assert best is not None  # a search runs at least one trial
        _, model, raw = best
    else:
        model = _fit(folds, hyperparameters)
        raw = _validation_raw(model, folds)
    calibrated, calibration = calibrate(
        model, raw, folds.y_validation, choices.calibration, choices.calibration_significance
    )
    pipeline = Pipeline([("preprocess", preprocessor), ("model", calibrated)])
    validation_probability = calibrated.calibrate_raw(raw)
    gain = model.booster_.feature_importance(importance_type="gain")
    return TrainedModel(
        pipeline=pipeline,
        hyperparameters=hyperparameters,
        best_iteration=_best_iteration(model),
        validation_metrics=metrics.classification_metrics(
            folds.y_validation, validation_probability
        ),
        feature_importance={
            n: float(g) for n, g in zip(output_features(preprocessor), gain, strict=True)
        },
        training_rows=len(folds.y_fit),
        validation_rows=len(folds.y_validation),
        calibration=calibration,
        tuning=tuning,
    )


def _validation_raw(model: lgb.LGBMClassifier, folds: _Folds) -> np.ndarray:
    """Raw scores (log-odds) on the validation fold: computed once per fitted model."""
    return np.asarray(model.predict(folds.x_validation, raw_score=True), dtype=np.float64)


def _best_iteration(model: lgb.LGBMClassifier) -> int:
    return int(model.best_iteration_ or model.n_estimators)


def churn_probability(model: Any, features: pd.DataFrame) -> Any:
    """Churn probability from a fitted pipeline or an MLflow sklearn model."""
    return model.predict_proba(features[model_inputs(model)])[:, 1]

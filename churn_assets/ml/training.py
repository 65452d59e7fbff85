"""LightGBM training with early stopping on a validation fold carved from the training rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from churn_assets.ml import metrics, schema
from churn_assets.ml.features import categorical_positions, output_features
from churn_assets.ml.splitting import features_and_target


@dataclass(frozen=True)
class Hyperparameters:
    """LightGBM's settings and early stopping: the defaults every entry point shares."""

    n_estimators: int = 2000
    learning_rate: float = 0.03
    num_leaves: int = 7
    min_child_samples: int = 50
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    validation_fraction: float = 0.15
    early_stopping_rounds: int = 50
    seed: int = 42

    def lightgbm_params(self) -> dict[str, Any]:
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "subsample": self.subsample,
            "subsample_freq": 1,
            "colsample_bytree": self.colsample_bytree,
            "reg_lambda": self.reg_lambda,
        }


DEFAULTS = Hyperparameters()


@dataclass(frozen=True)
class TrainedModel:
    """The fitted preprocessor+model pipeline and what training learned about it."""

    pipeline: Pipeline
    best_iteration: int
    validation_metrics: dict[str, float]
    feature_importance: dict[str, float]
    training_rows: int
    validation_rows: int


def train_churn_model(
    preprocessor: ColumnTransformer, train: pd.DataFrame, hyperparameters: Hyperparameters
) -> TrainedModel:
    """Fit LightGBM on training rows; the holdout is never seen here.

    The validation fold only decides when to stop boosting. `deterministic` and a fixed seed
    make the same data and parameters give the same model, and so the same metrics.
    """
    seed = hyperparameters.seed
    fit_rows, validation_rows = train_test_split(
        train,
        test_size=hyperparameters.validation_fraction,
        random_state=seed,
        stratify=train[schema.TARGET_COLUMN],
    )
    x_fit, y_fit = features_and_target(fit_rows)
    x_val, y_val = features_and_target(validation_rows)
    names = output_features(preprocessor)
    model = lgb.LGBMClassifier(
        **hyperparameters.lightgbm_params(),
        objective="binary",
        metric="binary_logloss",
        random_state=seed,
        deterministic=True,
        force_col_wise=True,
        verbose=-1,
    )
    model.fit(
        preprocessor.transform(x_fit),
        y_fit.to_numpy(),
        eval_X=(preprocessor.transform(x_val),),
        eval_y=(y_val.to_numpy(),),
        categorical_feature=categorical_positions(preprocessor),
        callbacks=[lgb.early_stopping(hyperparameters.early_stopping_rounds, verbose=False)],
    )
    pipeline = Pipeline([("preprocess", preprocessor), ("model", model)])
    validation_probability = pipeline.predict_proba(x_val)[:, 1]
    gain = model.booster_.feature_importance(importance_type="gain")
    return TrainedModel(
        pipeline=pipeline,
        best_iteration=int(model.best_iteration_ or model.n_estimators),
        validation_metrics=metrics.classification_metrics(y_val.to_numpy(), validation_probability),
        feature_importance={n: float(g) for n, g in zip(names, gain, strict=True)},
        training_rows=len(fit_rows),
        validation_rows=len(validation_rows),
    )


def churn_probability(model: Any, features: pd.DataFrame) -> Any:
    """Churn probability from a fitted pipeline or an MLflow sklearn model."""
    return model.predict_proba(features[list(schema.FEATURE_COLUMNS)])[:, 1]

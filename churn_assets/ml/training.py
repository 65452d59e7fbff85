"""LightGBM training with early stopping on a validation fold carved from the training rows."""

from __future__ import annotations

from collections.abc import Mapping
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
class TrainedModel:
    """The fitted preprocessor+model pipeline and what training learned about it."""

    pipeline: Pipeline
    best_iteration: int
    validation_metrics: dict[str, float]
    feature_importance: dict[str, float]
    training_rows: int
    validation_rows: int


def train_churn_model(
    preprocessor: ColumnTransformer,
    train: pd.DataFrame,
    params: Mapping[str, Any],
    validation_fraction: float,
    early_stopping_rounds: int,
    seed: int,
) -> TrainedModel:
    """Fit LightGBM on training rows; the holdout is never seen here.

    The validation fold only decides when to stop boosting. `deterministic` and a fixed seed
    make the same data and parameters give the same model, and so the same metrics.
    """
    fit_rows, validation_rows = train_test_split(
        train,
        test_size=validation_fraction,
        random_state=seed,
        stratify=train[schema.TARGET_COLUMN],
    )
    x_fit, y_fit = features_and_target(fit_rows)
    x_val, y_val = features_and_target(validation_rows)
    names = output_features(preprocessor)
    model = lgb.LGBMClassifier(
        **params,
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
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
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

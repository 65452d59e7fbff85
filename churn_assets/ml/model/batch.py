"""Whole-table probabilities straight from the booster: the batch twin of the API's FastScorer.

The logged pipeline's ColumnTransformer copies the table and its OrdinalEncoder matches each
row's level in Python objects; the cleaned table already holds categories as pandas
categoricals, whose codes are remapped to the encoder's from the levels alone. The matrix is
the one the pipeline builds (same codes, unknown levels NaN, numbers as they are, the
preprocessor's column order) and the booster is called as the sklearn wrapper calls it, so
the probabilities equal the pipeline's (tests hold them to 1e-9).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from churn_assets.ml.model import features
from churn_assets.ml.model.calibration import CalibratedChurnClassifier


def model_matrix(pipeline: Any, frame: pd.DataFrame) -> np.ndarray:
    """The float64 matrix the pipeline's preprocessor would hand the model."""
    preprocess = pipeline.named_steps["preprocess"]
    levels = features.encoded_levels(preprocess)
    order = features.output_features(preprocess)
    matrix = np.empty((len(frame), len(order)), dtype=np.float64, order="F")
    for position, column in enumerate(order):
        values = frame[column]
        if column in levels:
            known = levels[column]
            if isinstance(values.dtype, pd.CategoricalDtype):
                codes = (
                    values.cat.rename_categories([str(c) for c in values.cat.categories])
                    .cat.set_categories(known)
                    .cat.codes.to_numpy()
                )
            else:
                codes = pd.Categorical(values.astype(str), categories=known).codes
            column_values = codes.astype(np.float64)
            column_values[codes < 0] = np.nan  # unknown or missing level, as the encoder
            matrix[:, position] = column_values
        else:
            matrix[:, position] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.ascontiguousarray(matrix)


def churn_probability(pipeline: Any, frame: pd.DataFrame) -> np.ndarray:
    """Each row's churn probability, as `pipeline.predict_proba(frame)[:, 1]` gives it."""
    model = pipeline.named_steps["model"]
    matrix = model_matrix(pipeline, frame)
    if isinstance(model, CalibratedChurnClassifier):
        return model.calibrate_raw(model.booster_.predict(matrix, raw_score=True))
    return np.asarray(model.booster_.predict(matrix), dtype=np.float64)

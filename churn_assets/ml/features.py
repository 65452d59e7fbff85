"""The preprocessor that turns export columns into the model's numeric matrix.

Categorical levels are numbered in the order `schema.CATEGORICAL_LEVELS` lists them, so
anything that knows the schema (the API's fast path) can build the same matrix without
running sklearn; numeric columns pass through unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OrdinalEncoder

from churn_assets.ml import schema


def build_preprocessor() -> ColumnTransformer:
    encoder = OrdinalEncoder(
        categories=[list(schema.CATEGORICAL_LEVELS[c]) for c in schema.CATEGORICAL_FEATURES],
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        dtype=np.float64,
    )
    return ColumnTransformer(
        [
            ("categorical", encoder, list(schema.CATEGORICAL_FEATURES)),
            ("numeric", "passthrough", list(schema.NUMERIC_FEATURES)),
        ],
        verbose_feature_names_out=False,
    )


def fit_preprocessor(train_features: pd.DataFrame) -> ColumnTransformer:
    """Fit on training rows only, so nothing about the holdout leaks into the transform."""
    return build_preprocessor().fit(train_features)


def output_features(preprocessor: ColumnTransformer) -> list[str]:
    return [str(name) for name in preprocessor.get_feature_names_out()]


def categorical_positions(preprocessor: ColumnTransformer) -> list[int]:
    names = output_features(preprocessor)
    return [names.index(c) for c in schema.CATEGORICAL_FEATURES]

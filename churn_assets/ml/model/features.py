"""The preprocessor that turns the contract's features into the model's numeric matrix.

Categorical levels are numbered in the order the contract lists them (levels it leaves out are
learned from the training rows, sorted), so anything holding the fitted encoder (the API's fast
path) can build the same matrix without running sklearn; numeric columns pass through.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OrdinalEncoder

from churn_assets.ml.data.contract import Contract


def levels_of(contract: Contract, column: str, train_features: pd.DataFrame) -> list[str]:
    """A category's levels: as the contract lists them, else those training saw, sorted."""
    listed = contract.listed_levels.get(column)
    if listed is not None:
        return list(listed)
    return sorted({str(v) for v in train_features[column].dropna().unique()})


#: Rows the transform itself is fitted on. Every level is handed to the encoder (listed by the
#: contract or found in all training rows by `levels_of`), so fitting only records the columns
#: and their order; on every row, ColumnTransformer.fit would encode them all and throw the
#: result away (20 s at eight million training customers). A test holds both fits equal.
FIT_ROWS = 1_000


def fit_preprocessor(train_features: pd.DataFrame, contract: Contract) -> ColumnTransformer:
    """Fit on training rows only, so nothing about the holdout leaks into the transform."""
    categorical = list(contract.categorical_features)
    encoder = OrdinalEncoder(
        categories=[levels_of(contract, c, train_features) for c in categorical],
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        dtype=np.float64,
    )
    preprocessor = ColumnTransformer(
        [
            ("categorical", encoder, categorical),
            ("numeric", "passthrough", list(contract.numeric_features)),
        ],
        verbose_feature_names_out=False,
    )
    return preprocessor.fit(train_features[list(contract.feature_columns)].head(FIT_ROWS))


def output_features(preprocessor: ColumnTransformer) -> list[str]:
    return [str(name) for name in preprocessor.get_feature_names_out()]


def encoded_levels(preprocessor: ColumnTransformer) -> dict[str, list[str]]:
    """Each categorical input's levels in the fitted encoder's order: level i has code i."""
    fitted = {name: (step, columns) for name, step, columns in preprocessor.transformers_}
    encoder, categorical = fitted["categorical"]
    return {
        str(column): [str(level) for level in levels]
        for column, levels in zip(categorical, encoder.categories_, strict=True)
    }


def categorical_positions(preprocessor: ColumnTransformer) -> list[int]:
    names = output_features(preprocessor)
    categorical = dict((name, columns) for name, _, columns in preprocessor.transformers_)
    return [names.index(c) for c in categorical.get("categorical", [])]


def model_inputs(pipeline: Any) -> list[str]:
    """The columns a fitted pipeline reads, in the order it was fitted on."""
    return [str(c) for c in pipeline.feature_names_in_]

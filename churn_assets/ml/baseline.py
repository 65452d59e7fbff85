"""The reference model every candidate is compared with: logistic regression, same features.

A gradient-boosted model that cannot beat a linear one on the same holdout is overfitting,
mis-tuned or fed broken features; the evaluation report shows both, and the gate can require
the candidate to win. One-hot levels (in the schema's order) and standardised numerics are
the usual strong linear set-up; a seeded sample of at most `MAX_ROWS` training rows is plenty
for a model with a few dozen coefficients and keeps the cost flat at millions of customers.
"""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn_assets.ml import schema
from churn_assets.ml.splitting import features_and_target

MAX_ROWS = 200_000
NAME = "logistic regression"


def fit_baseline(train: pd.DataFrame, seed: int) -> Pipeline:
    """Fit on training rows only (a seeded sample when there are more than MAX_ROWS)."""
    rows = train if len(train) <= MAX_ROWS else train.sample(n=MAX_ROWS, random_state=seed)
    features, target = features_and_target(rows)
    levels = [list(schema.CATEGORICAL_LEVELS[c]) for c in schema.CATEGORICAL_FEATURES]
    encode = ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(categories=levels, handle_unknown="ignore"),
                list(schema.CATEGORICAL_FEATURES),
            ),
            ("numeric", StandardScaler(), list(schema.NUMERIC_FEATURES)),
        ]
    )
    model = Pipeline([("encode", encode), ("model", LogisticRegression(max_iter=1000))])
    return model.fit(features, target.to_numpy())

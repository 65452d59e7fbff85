"""The reference model every candidate is compared with: logistic regression, same features.

A gradient-boosted model that cannot beat a linear one on the same holdout is overfitting,
mis-tuned or fed broken features; the evaluation report shows both, and the gate can require
the candidate to win. One-hot levels (in the schema's order) and standardised numerics are
the usual strong linear set-up; a seeded sample of at most `MAX_ROWS` training rows is plenty
for a model with a few dozen coefficients and keeps the cost flat at millions of customers.
"""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn_assets.ml.data.splitting import CustomerSplits, features_and_target
from churn_assets.ml.model.features import levels_of

MAX_ROWS = 200_000
NAME = "logistic regression"


def fit_baseline(splits: CustomerSplits, seed: int) -> Pipeline:
    """Fit on training rows only (a seeded sample when there are more than MAX_ROWS).

    Blank numbers the contract keeps as missing are imputed with the training median: a
    linear model has no way of its own to read them.
    """
    train, contract = splits.train, splits.contract
    rows = train if len(train) <= MAX_ROWS else train.sample(n=MAX_ROWS, random_state=seed)
    features, target = features_and_target(rows, contract)
    levels = [levels_of(contract, c, features) for c in contract.categorical_features]
    encode = ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(categories=levels, handle_unknown="ignore"),
                list(contract.categorical_features),
            ),
            (
                "numeric",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                list(contract.numeric_features),
            ),
        ]
    )
    model = Pipeline([("encode", encode), ("model", LogisticRegression(max_iter=1000))])
    return model.fit(features, target.to_numpy())

"""The uplift model as it is logged, registered and served: a T-learner behind the platform's
preprocessor, in one sklearn pipeline (`preprocess`, then `model`).

It lives apart from `uplift` (which reads campaigns and snapshots) because whatever loads a
registered version must import this class and nothing heavier: the API, which ships without
the training stack, and skops, which trusts it by this module's name (tracking's pinned types).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

#: The facts, signed with a registered version's files, its expected incremental value is
#: priced by: the value of a kept customer and the offer's cost it was judged with.
SAVED_VALUE_FACT = "saved_customer_value"
OFFER_COST_FACT = "offer_cost"


class UpliftTLearner(BaseEstimator):
    """Churn among the treated and among the untreated: a customer's uplift is the second's
    probability less the first's, the churn an offer prevents (negative: it pushes them out).

    `predict` returns the uplift, so the pyfunc flavor (`mlflow models serve`) serves it too.
    """

    def __init__(self, treated: Any = None, untreated: Any = None) -> None:
        self.treated = treated
        self.untreated = untreated

    def __sklearn_is_fitted__(self) -> bool:
        return self.treated is not None and self.untreated is not None

    def fit(self, x: Any, y: Any) -> UpliftTLearner:
        raise NotImplementedError("built from two fitted classifiers by uplift.fit")

    def uplift_of_matrix(self, matrix: np.ndarray, threads: int = 0) -> np.ndarray:
        """The uplift of rows already encoded as the preprocessor encodes them, straight from
        the two boosters (what `predict` gives, without sklearn's checks: batch scoring and
        the API call this; the API with one thread for small requests, as its scorer)."""
        boosters = (self.untreated.booster_, self.treated.booster_)
        untreated, treated = (
            np.asarray(b.predict(matrix, num_threads=threads), dtype=np.float64) for b in boosters
        )
        return untreated - treated

    def predict(self, x: Any) -> np.ndarray:
        return self.uplift_of_matrix(np.asarray(x, dtype=np.float64))


def expected_incremental_value(
    uplift: np.ndarray, saved_value: float, offer_cost: float
) -> np.ndarray:
    """What an offer to each customer is worth: the churn it prevents times the value of a
    kept customer, less the offer's cost. An offer pays where this is above 0."""
    return np.asarray(uplift, dtype=np.float64) * saved_value - offer_cost


def prices(facts: Mapping[str, object]) -> tuple[float, float]:
    """The value of a kept customer and the offer's cost a registered version was judged
    with, from its verified manifest's facts."""
    return float(str(facts[SAVED_VALUE_FACT])), float(str(facts[OFFER_COST_FACT]))

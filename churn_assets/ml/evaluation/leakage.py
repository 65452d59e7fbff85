"""Too good to be true: a candidate, or one feature of it alone, that all but knows who left.

Churn is noisy: customers leave for reasons no export records, and the public telco exports
top out near AUC 0.85-0.9. A holdout AUC near 1 almost always means the target leaked into the
features (a recoded copy of the churn flag, a field filled in after the customer left), and a
model that learned it scores perfectly on the holdout and uselessly on tomorrow's customers.
A new contract has no gate history to compare with, so the gate needs a ceiling of its own
(CHURN_MAX_PLAUSIBLE_AUC) and a look at the features that carry the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

#: Features, by the model's own gain, whose predictive power alone is measured.
TOP_FEATURES = 3


@dataclass(frozen=True)
class FeatureAlone:
    """The candidate's most important features' holdout AUC, each used alone."""

    #: feature -> AUC of that feature alone on the holdout, most important first
    auc: dict[str, float]

    @property
    def strongest(self) -> tuple[str, float]:
        feature = max(self.auc, key=lambda name: self.auc[name])
        return feature, self.auc[feature]


def top_features(pipeline: Any, count: int = TOP_FEATURES) -> list[str]:
    """The pipeline's input features with the most total gain, most first."""
    names = [str(c) for c in pipeline.named_steps["preprocess"].get_feature_names_out()]
    gain = pipeline.named_steps["model"].booster_.feature_importance(importance_type="gain")
    order = np.argsort(-np.asarray(gain, dtype=np.float64), kind="stable")
    return [names[i] for i in order[:count] if gain[i] > 0]


def alone_auc(train: pd.DataFrame, holdout: pd.DataFrame, feature: str, target: str) -> float:
    """How well `feature` alone ranks the holdout's churners, either way round.

    A category scores as its churn rate among the training customers (a level training never
    saw, as the overall rate); a number as itself, blanks as the training median.
    """
    y = holdout[target].to_numpy()
    column = holdout[feature]
    if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object:
        rates = train.groupby(train[feature].astype(str), observed=True)[target].mean()
        score = column.astype(str).map(rates).astype(np.float64)
        score = score.fillna(float(train[target].mean()))
    else:
        values = pd.to_numeric(column, errors="coerce").astype(np.float64)
        median = float(pd.to_numeric(train[feature], errors="coerce").median())
        score = values.fillna(0.0 if np.isnan(median) else median)
    auc = float(roc_auc_score(y, score.to_numpy()))
    return max(auc, 1.0 - auc)


def features_alone(
    pipeline: Any, train: pd.DataFrame, holdout: pd.DataFrame, target: str
) -> FeatureAlone | None:
    """The top features' AUC alone; None when the holdout has one class only."""
    if holdout[target].nunique() < 2:
        return None
    return FeatureAlone(
        {name: alone_auc(train, holdout, name, target) for name in top_features(pipeline)}
    )

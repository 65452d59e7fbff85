"""The learning curve: holdout AUC of the same model fitted on growing shares of the rows.

It is what justifies training on a capped sample (churn_assets.ml.model.sampling): if the
AUC still rises between the last two sizes, the cap is too low. Each point is a full
early-stopped fit with the run's hyperparameters, without calibration (a monotone map, it
does not change the AUC), on a stratified sample; the last point is the trained model itself.
The three smaller fits cost about twice the main fit (measured at 800,000 training rows: 60 s
besides a 30 s fit; smaller samples stop boosting later), so by default the curve is drawn
only where the cap is in play, from CHURN_LEARNING_CURVE_MIN_ROWS (1M) training rows on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.metrics import roc_auc_score

from churn_assets.ml.data.contract import Contract
from churn_assets.ml.model import batch
from churn_assets.ml.model.calibration_mode import CalibrationMode
from churn_assets.ml.model.hyperparameters import Hyperparameters
from churn_assets.ml.model.sampling import stratified_sample
from churn_assets.ml.model.training import TrainingChoices, train_churn_model

#: Shares of the training rows fitted besides the full model.
SHARES = (0.125, 0.25, 0.5)
MIN_POINT_ROWS = 1_000


@dataclass(frozen=True)
class CurvePoint:
    rows: int
    holdout_auc: float
    trees: int
    fit_seconds: float


def holdout_auc(pipeline: Any, holdout: pd.DataFrame, contract: Contract) -> float:
    # the batch scorer reads the model's columns from the frame: no copy of the features
    target = holdout[contract.target_column]
    return float(roc_auc_score(target, batch.churn_probability(pipeline, holdout)))


def learning_curve(
    preprocessor: ColumnTransformer,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    contract: Contract,
    hyperparameters: Hyperparameters,
    choices: TrainingChoices,
    trained: tuple[Any, int, float],
) -> list[CurvePoint]:
    """Points at 1/8, 1/4 and 1/2 of `train`, then the trained (pipeline, trees, seconds).

    The smaller fits use the run's choices without calibration or a search: the curve is
    about rows, with the hyperparameters the trained model ended up with.
    """
    choices = replace(choices, calibration=CalibrationMode.never, tuning_budget_s=0.0)
    points = []
    for share in SHARES:
        rows = int(len(train) * share)
        if rows < MIN_POINT_ROWS:
            continue
        sample = stratified_sample(train, contract, rows, hyperparameters.seed)
        started = time.perf_counter()
        fitted = train_churn_model(preprocessor, sample, contract, hyperparameters, choices)
        seconds = time.perf_counter() - started
        auc = holdout_auc(fitted.pipeline, holdout, contract)
        points.append(CurvePoint(len(sample), auc, fitted.best_iteration, seconds))
    pipeline, trees, seconds = trained
    points.append(CurvePoint(len(train), holdout_auc(pipeline, holdout, contract), trees, seconds))
    return points


def last_gain(points: list[CurvePoint]) -> float | None:
    """AUC gained by the last doubling of the rows: near zero means more rows add nothing."""
    if len(points) < 2:
        return None
    return points[-1].holdout_auc - points[-2].holdout_auc


def table(points: list[CurvePoint]) -> list[dict[str, Any]]:
    return [asdict(replace(p, fit_seconds=round(p.fit_seconds, 2))) for p in points]

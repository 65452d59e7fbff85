"""Training on a stratified sample once more rows stop helping.

LightGBM's time grows with the rows while the holdout AUC stops growing long before ten
million customers (the pipeline benchmark's common holdout: 0.8616 at 100k training
customers, 0.8621 at 1M, 0.8622 at 10M, for ten times the fitting time at each step). Past
`CHURN_TRAIN_MAX_ROWS` the model is fitted on a sample of that size with the churn rate kept;
the learning curve (churn_assets.ml.evaluation.learning_curve) shows on every large run
whether the cap still costs nothing. A sample on one worker was chosen over
`lightgbm.dask`: that has no early stopping, open reports of hangs, and on this data buys
no AUC.

The sample is drawn by a seeded hash of each customer's ID (churn_assets.ml.data.sampling),
so it is the same whether the table is sampled whole or a partition at a time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn_assets.ml.data.contract import Contract
from churn_assets.ml.data.sampling import allocation, sample_keys, smallest_keys


def stratified_sample(
    frame: pd.DataFrame, contract: Contract, rows: int, seed: int
) -> pd.DataFrame:
    """At most `rows` of `frame`, churned and active customers in the frame's proportions."""
    if len(frame) <= rows:
        return frame
    classes = frame[contract.target_column].to_numpy()
    taken = allocation(np.bincount(classes, minlength=2), rows)
    keys = sample_keys(frame[contract.id_column], seed)
    return frame.loc[smallest_keys(keys, classes, taken)]

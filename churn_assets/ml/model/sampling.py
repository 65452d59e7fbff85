"""Training on a stratified sample once more rows stop helping.

LightGBM's time grows with the rows while the holdout AUC stops growing long before ten
million customers (the pipeline benchmark's common holdout: 0.8616 at 100k training
customers, 0.8621 at 1M, 0.8622 at 10M, for ten times the fitting time at each step). Past
`CHURN_TRAIN_MAX_ROWS` the model is fitted on a sample of that size with the churn rate kept;
the learning curve (churn_assets.ml.evaluation.learning_curve) shows on every large run
whether the cap still costs nothing. A sample on one worker was chosen over
`lightgbm.dask`: that has no early stopping, open reports of hangs, and on this data buys
no AUC.

The sample is drawn by a seeded hash of each customer's ID, not by the row's position: of
each class, the customers with the smallest keys. So it is the same whether the table is
sampled whole or a partition at a time on a cluster (each partition sends only its
customers below a key bound, and the merge keeps the smallest), and a customer's draw does
not change when other customers are added.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from churn_assets.ml.data.contract import Contract


def sample_keys(customer_ids: pd.Series, seed: int) -> np.ndarray:
    """Each customer's uint64 sampling key: uniform, seeded, and independent of the holdout
    hash (a different hash key), so the sample does not lean to either side of the split."""
    key = hashlib.blake2b(f"sample-{seed}".encode(), digest_size=8).hexdigest()
    return pd.util.hash_pandas_object(
        customer_ids.astype(str), index=False, hash_key=key, categorize=False
    ).to_numpy()


def allocation(counts: np.ndarray, rows: int) -> np.ndarray:
    """How many of each class a sample of `rows` takes: proportional to `counts` (largest
    remainders), at least one of every class present, all of them when they fit."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total <= rows:
        return counts
    share = counts * rows / total
    taken = np.floor(share).astype(np.int64)
    for index in np.argsort(-(share - taken), kind="stable")[: rows - int(taken.sum())]:
        taken[index] += 1
    present = (counts > 0) & (taken == 0)
    taken[present] = 1
    while taken.sum() > rows:  # the minimum of one came out of the largest class
        taken[np.argmax(taken)] -= 1
    return np.minimum(taken, counts)


def smallest_keys(keys: np.ndarray, classes: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Which rows a stratified draw keeps: of class c, the `taken[c]` smallest keys (ties by
    position). A boolean mask over the rows, in their order."""
    keep = np.zeros(len(keys), dtype=bool)
    for cls, count in enumerate(taken):
        rows = np.flatnonzero(classes == cls)
        if count >= len(rows):
            keep[rows] = True
        elif count > 0:
            keep[rows[np.argsort(keys[rows], kind="stable")[:count]]] = True
    return keep


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

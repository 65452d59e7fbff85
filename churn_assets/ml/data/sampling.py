"""Stratified draws of customers by a seeded hash of each one's ID, not by the row's position.

Of each class, the customers with the smallest keys are drawn. So a draw is the same whether
the table is sampled whole or a partition at a time on a cluster (each partition sends only
its customers below a key bound, and the merge keeps the smallest), and a customer's draw
does not change when other customers are added. The split's caps (`splitting.SplitCaps`)
and training's sample (churn_assets.ml.model.sampling) both draw this way.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


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

"""Train/holdout split keyed by customer, so a customer stays on one side as data grows."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn_assets.ml.data.contract import Contract
from churn_assets.ml.data.reading import SOURCE_SHA256

#: Share of customers held out for evaluation, and the seed fixing which ones.
HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 42


@dataclass(frozen=True)
class CustomerSplits:
    """Training rows (model fitting and early stopping) and holdout rows (evaluation only)."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    #: The data contract the rows were cleaned by: what the model's features are.
    contract: Contract
    #: The training snapshot the rows come from (its SHA-256), and how they were split.
    snapshot_id: str
    holdout_fraction: float = HOLDOUT_FRACTION
    seed: int = SPLIT_SEED
    #: Point-in-time training only (see churn_assets.ml.data.point_in_time): the newest complete
    #: window's customers, which training never saw, and the days the rows were observed on.
    out_of_time: pd.DataFrame | None = None
    out_of_time_day: str | None = None
    training_days: tuple[str, ...] = ()
    window_days: int | None = None

    @property
    def basis(self) -> str:
        """What the label means: left within the window after a day, or the export's status."""
        if self.window_days is None:
            return "status: Churn as the newest snapshot says"
        return f"point in time: left within {self.window_days} days of the day observed"


def in_holdout(customer_ids: pd.Series, holdout_fraction: float, seed: int) -> np.ndarray:
    """Whether each customer is held out: a seeded hash of the ID, not of the row position.

    A random split of the whole table reshuffles when an extract adds customers, and the
    production model would then be "evaluated" on customers it was trained on, which flatters
    it in the comparison the gate makes. Hashing the ID keeps every customer on the same side
    for as long as the seed and fraction stay, so new models and the production model are
    compared on customers neither has seen.
    """
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
    key = hashlib.blake2b(str(seed).encode(), digest_size=8).hexdigest()
    # categorize=False: IDs are unique, so factorizing first would only cost time (7x at 10M).
    hashes = pd.util.hash_pandas_object(
        customer_ids.astype(str), index=False, hash_key=key, categorize=False
    ).to_numpy()
    return hashes < np.uint64(holdout_fraction * 2**64)


def split_customers(
    frame: pd.DataFrame, contract: Contract, holdout_fraction: float, seed: int
) -> CustomerSplits:
    """Both sides must hold churners and stayers, or neither fitting nor evaluation means much."""
    holdout = in_holdout(frame[contract.id_column], holdout_fraction, seed)
    splits = CustomerSplits(
        frame[~holdout].reset_index(drop=True),
        frame[holdout].reset_index(drop=True),
        contract=contract,
        snapshot_id=str(frame.attrs.get(SOURCE_SHA256, "unknown")),
        holdout_fraction=holdout_fraction,
        seed=seed,
    )
    for side, part in (("training", splits.train), ("holdout", splits.holdout)):
        classes = part[contract.target_column].nunique()
        if classes < 2:
            raise ValueError(
                f"the {side} side of the split ({len(part)} of {len(frame)} customers, "
                f"holdout_fraction {holdout_fraction}, seed {seed}) holds only one "
                f"{contract.target_column} class; more customers or another holdout_fraction "
                "are needed"
            )
    return splits


def features_and_target(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, pd.Series]:
    """Model inputs (no ID, no target) and the 0/1 target."""
    return frame[list(contract.feature_columns)], frame[contract.target_column]

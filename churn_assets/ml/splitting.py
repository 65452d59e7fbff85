"""Deterministic, stratified train/holdout split."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import train_test_split

from churn_assets.ml import schema
from churn_assets.ml.cleaning import SOURCE_SHA256

#: Share of customers held out for evaluation, and the seed fixing which ones.
HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 42


@dataclass(frozen=True)
class CustomerSplits:
    """Training rows (model fitting and early stopping) and holdout rows (evaluation only)."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    data_sha256: str


def split_customers(frame: pd.DataFrame, holdout_fraction: float, seed: int) -> CustomerSplits:
    """Stratify on the target so both parts keep the churn rate; the seed fixes membership."""
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
    train, holdout = train_test_split(
        frame,
        test_size=holdout_fraction,
        random_state=seed,
        stratify=frame[schema.TARGET_COLUMN],
    )
    return CustomerSplits(
        train.reset_index(drop=True),
        holdout.reset_index(drop=True),
        data_sha256=str(frame.attrs.get(SOURCE_SHA256, "unknown")),
    )


def features_and_target(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Model inputs (no ID, no target) and the 0/1 target."""
    return frame[list(schema.FEATURE_COLUMNS)], frame[schema.TARGET_COLUMN]

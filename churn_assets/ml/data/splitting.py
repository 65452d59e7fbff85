"""Train/holdout split keyed by customer, so a customer stays on one side as data grows.

Each side is kept whole up to its cap (CHURN_TRAIN_MAX_ROWS, CHURN_HOLDOUT_MAX_ROWS) and as
a stratified sample of that size past it (churn_assets.ml.data.sampling), so a table of any
size is split a partition at a time: each partition sends its counts and only its customers
whose sampling key is under a bound that leaves enough of each class, and `merge_split`
keeps the smallest keys. One partition (a table split whole) and many give the same rows.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn_assets.ml.data import sampling
from churn_assets.ml.data.contract import Contract
from churn_assets.ml.data.reading import SOURCE_SHA256

#: Share of customers held out for evaluation, and the seed fixing which ones.
HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 42
#: A key bound that keeps every row.
KEEP_ALL = np.uint64(2**64 - 1)
_SIDE, _KEY = "__holdout", "__sample_key"


@dataclass(frozen=True)
class CustomerSplits:
    """Training rows (model fitting and early stopping) and holdout rows (evaluation only)."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    #: The data contract the rows were cleaned by: what the model's features are.
    contract: Contract
    #: The training snapshot the rows come from (its SHA-256), and how they were split.
    snapshot_id: str
    #: Customers on each side before the caps: `train` and `holdout` are samples when fewer.
    train_available: int
    holdout_available: int
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


@dataclass(frozen=True)
class SplitCaps:
    """Most customers kept on each side; past them, a stratified sample of that many."""

    train_rows: int = sys.maxsize
    holdout_rows: int = sys.maxsize

    def taken(self, counts: np.ndarray) -> np.ndarray:
        """Per side (train, holdout) and class, how many customers the split keeps."""
        return np.stack(
            [
                sampling.allocation(counts[0], self.train_rows),
                sampling.allocation(counts[1], self.holdout_rows),
            ]
        )

    def key_bounds(self, expected: np.ndarray) -> np.ndarray:
        """Per side and class, the sampling-key bound a partition sends customers under,
        from the customers `expected` there: enough to leave six standard deviations of
        room over what the caps take, every customer where the side fits its cap."""
        bounds = np.full((2, 2), KEEP_ALL, dtype=np.uint64)
        taken = self.taken(np.rint(expected).astype(np.int64))
        for side, cls in np.ndindex(2, 2):
            wanted, there = float(taken[side, cls]), float(expected[side, cls])
            share = (wanted + 6 * math.sqrt(wanted) + 10) / there if there else 1.0
            if share < 1:
                bounds[side, cls] = np.uint64(min(int(share * 2.0**64), 2**64 - 1))
        return bounds


class SampleShortfallError(Exception):
    """A partition's key bound sent fewer customers than the caps take (retry it wider)."""


@dataclass(frozen=True)
class SplitPart:
    """One partition's share of the split: its counts, and its customers under the bounds."""

    #: Customers per side (train, holdout) and class (0, 1), before any sampling.
    counts: np.ndarray
    #: The customers under their side's and class's key bound, with their side and key.
    candidates: pd.DataFrame


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


def split_part(
    frame: pd.DataFrame,
    contract: Contract,
    holdout_fraction: float,
    seed: int,
    bounds: np.ndarray | None = None,
) -> SplitPart:
    """One partition's side of each customer, its counts, and the candidates `merge_split`
    samples from (every customer without `bounds`)."""
    ids = frame[contract.id_column]
    holdout = in_holdout(ids, holdout_fraction, seed)
    classes = frame[contract.target_column].to_numpy().astype(np.intp)
    side = holdout.astype(np.intp)
    counts = np.bincount(side * 2 + classes, minlength=4).reshape(2, 2).astype(np.int64)
    keys = sampling.sample_keys(ids, seed)
    keep = np.ones(len(frame), dtype=bool) if bounds is None else keys <= bounds[side, classes]
    candidates = frame.loc[keep].assign(**{_SIDE: holdout[keep], _KEY: keys[keep]})
    return SplitPart(counts, candidates)


def merge_split(
    parts: list[SplitPart],
    contract: Contract,
    holdout_fraction: float,
    seed: int,
    caps: SplitCaps,
    snapshot_id: str,
) -> CustomerSplits:
    """The splits of consecutive partitions, as splitting the whole table gives.

    Both sides must hold churners and stayers, or neither fitting nor evaluation means much.
    Raises SampleShortfallError when the bounds sent too few customers of a class to sample from.
    """
    counts = sum((part.counts for part in parts), np.zeros((2, 2), dtype=np.int64))
    total = int(counts.sum())
    for side, name in ((0, "training"), (1, "holdout")):
        if (counts[side] == 0).any():
            raise ValueError(
                f"the {name} side of the split ({int(counts[side].sum())} of {total} "
                f"customers, holdout_fraction {holdout_fraction}, seed {seed}) holds only one "
                f"{contract.target_column} class; more customers or another holdout_fraction "
                "are needed"
            )
    candidates = (
        parts[0].candidates if len(parts) == 1 else pd.concat([part.candidates for part in parts])
    )
    taken = caps.taken(counts)
    sides = []
    for side in (0, 1):
        rows = candidates.loc[candidates[_SIDE].to_numpy() == bool(side)]
        classes = rows[contract.target_column].to_numpy().astype(np.intp)
        if (np.bincount(classes, minlength=2) < taken[side]).any():
            raise SampleShortfallError(f"side {side}: {np.bincount(classes, minlength=2)}")
        keep = sampling.smallest_keys(rows[_KEY].to_numpy(), classes, taken[side])
        sides.append(rows.loc[keep].drop(columns=[_SIDE, _KEY]).reset_index(drop=True))
    return CustomerSplits(
        sides[0],
        sides[1],
        contract=contract,
        snapshot_id=snapshot_id,
        train_available=int(counts[0].sum()),
        holdout_available=int(counts[1].sum()),
        holdout_fraction=holdout_fraction,
        seed=seed,
    )


def split_customers(
    frame: pd.DataFrame,
    contract: Contract,
    holdout_fraction: float,
    seed: int,
    caps: SplitCaps | None = None,
) -> CustomerSplits:
    """A table in memory split whole: the one-partition case of `merge_split`."""
    part = split_part(frame, contract, holdout_fraction, seed)
    snapshot_id = str(frame.attrs.get(SOURCE_SHA256, "unknown"))
    return merge_split([part], contract, holdout_fraction, seed, caps or SplitCaps(), snapshot_id)


def features_and_target(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, pd.Series]:
    """Model inputs (no ID, no target) and the 0/1 target."""
    return frame[list(contract.feature_columns)], frame[contract.target_column]

"""Point-in-time training tables: features as of a date, the label from what happened after.

Once history is long enough, the question a churn model answers is "of the customers active on
day T, who leaves within the next W days?" (W: CHURN_OUTCOME_WINDOW_DAYS, 90). Each snapshot
of the current one's lineage is a day T on which features were true; the labels come from the
churn dates the newest snapshot records. Features are never taken from after T, and a row is
labelled only when its whole window has passed.

The newest complete window is kept out of training: its rows (customers active on T_oot, the
latest T with T + W on or before the newest snapshot's date) are the out-of-time evaluation,
and training uses only days T with T + W <= T_oot, so no label it learns from falls in the
window it is judged on. With history too short for both, there is no out-of-time table and
training falls back to the newest snapshot's status (Churn as the export says it) with the
seeded customer holdout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta

import numpy as np
import pandas as pd

from churn_assets.ml.data import cleaning, history, reading
from churn_assets.ml.data.contract import CHURN_DATE, HISTORY_COLUMNS, Contract
from churn_assets.ml.data.snapshots import SnapshotInfo, SnapshotStore
from churn_assets.ml.data.splitting import CustomerSplits, SplitCaps, split_customers

#: The column saying which day a training row was observed on.
OBSERVED = "observed_on"


@dataclass(frozen=True)
class PointInTime:
    """Training rows over the days before the out-of-time window, and that window's rows."""

    train: pd.DataFrame
    out_of_time: pd.DataFrame
    training_days: list[str]
    out_of_time_day: str
    window_days: int


def snapshot_days(chain: list[SnapshotInfo]) -> dict[date, SnapshotInfo]:
    """One snapshot per day, the newest of the day."""
    return {date.fromisoformat(s.as_of): s for s in chain}


def observe(
    features: pd.DataFrame,
    churn_dates: pd.Series,
    day: date,
    window_days: int,
    contract: Contract,
) -> pd.DataFrame:
    """Customers active on `day` with their features then; Churn = left within the window.

    `features` are the cleaned customers of the snapshot dated `day`; `churn_dates` maps each
    customer to the churn date the newest snapshot records ("" for none).
    """
    churned_then = features[CHURN_DATE].to_numpy() != ""
    rows = features.loc[~churned_then].copy()
    later = churn_dates.reindex(rows[contract.id_column]).fillna("").to_numpy()
    end = (day + timedelta(days=window_days)).isoformat()
    within = (later > day.isoformat()) & (later <= end) & (later != "")
    rows[contract.target_column] = within.astype(np.int8)
    rows[OBSERVED] = day.isoformat()
    return rows.drop(columns=list(HISTORY_COLUMNS))


def build(store: SnapshotStore, newest: str, window_days: int) -> PointInTime | None:
    """The point-in-time tables of the lineage ending at `newest`, or None if it is too short."""
    days = snapshot_days(store.lineage(newest))
    if not days:
        return None
    last = max(days)
    complete = [d for d in days if d + timedelta(days=window_days) <= last]
    if not complete:
        return None
    oot_day = max(complete)
    training_days = [d for d in complete if d + timedelta(days=window_days) <= oot_day]
    if not training_days:
        return None
    contract = store.contract
    churn_dates = history.churn_dates(store.read(days[last].id), contract)

    def table(day: date) -> pd.DataFrame:
        snapshot = store.read(days[day].id)
        cleaned, _ = cleaning.clean_customers(snapshot, contract, require_both_classes=False)
        return observe(cleaned, churn_dates, day, window_days, contract)

    train = pd.concat([table(d) for d in sorted(training_days)], ignore_index=True)
    train.attrs[reading.SOURCE_SHA256] = newest
    return PointInTime(
        train=train,
        out_of_time=table(oot_day),
        training_days=[d.isoformat() for d in sorted(training_days)],
        out_of_time_day=oot_day.isoformat(),
        window_days=window_days,
    )


def training_splits(
    store: SnapshotStore,
    snapshot_id: str,
    holdout_fraction: float,
    seed: int,
    window_days: int,
    caps: SplitCaps,
    status: Callable[[], CustomerSplits],
) -> CustomerSplits:
    """The graph's and `churn reproduce`'s one way from a snapshot to training rows.

    Point in time when the snapshot's history allows it, else `status()`: the snapshot's
    cleaned customers split by their status. Either way the customer-keyed holdout (a
    customer observed on several days stays on one side) and the same caps.
    """
    tables = build(store, snapshot_id, window_days) if snapshot_id else None
    if tables is None:
        return status()
    splits = split_customers(tables.train, store.contract, holdout_fraction, seed, caps)
    return replace(
        splits,
        out_of_time=tables.out_of_time,
        out_of_time_day=tables.out_of_time_day,
        training_days=tuple(tables.training_days),
        window_days=window_days,
    )

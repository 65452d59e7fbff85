"""Synthetic weeks: a customer base, then weekly extracts in which customers churn over time.

Made for showing and testing history without real data: snapshots, churn outcomes from full or
delta extracts, out-of-time evaluation and realized performance. The customers come from
`generate_customers`, whose Churn label says who is at risk; here that label becomes *when*:
each at-risk customer churns in a week drawn evenly from `churned_before` weeks before the
base to `horizon_weeks` after it. Those who churned before the base are in it as churners (as
in the public export); the others leave during the weeks, so who leaves next is predictable
from the features, as it is in life. New customers join every week. Tenure and charges grow
every four weeks.

Week w's extract, dated start + 7w days:
- full: every customer active that week, Churn = No (what billing systems send);
- delta: the customers who changed: who churned that week (Churn = Yes), who joined, and on
  the four-weekly billing week, everyone whose tenure grew.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.history import ExtractKind, today
from churn_assets.ml.data.synthetic import generate_customers, write_customers

#: No churn recorded for a customer (within the weeks made).
NEVER = 10**6


@dataclass(frozen=True)
class SyntheticHistory:
    """The base (week 0), each week's extract, and the truth the extracts should record."""

    start: date
    base: pd.DataFrame
    extracts: list[tuple[date, pd.DataFrame]]
    #: customerID -> the week the customer churns (<= 0: before the base; NEVER: not at all).
    churn_week: pd.Series
    join_week: pd.Series

    def churn_date(self, customer: str) -> date | None:
        week = int(self.churn_week[customer])
        return None if week == NEVER else self.start + timedelta(weeks=max(week, 0))


def make_history(
    customers: int,
    weeks: int,
    kind: ExtractKind,
    seed: int = 42,
    start: date = date(2026, 1, 5),
    horizon_weeks: int = 12,
    churned_before: int = 12,
    joiners_per_week: int | None = None,
) -> SyntheticHistory:
    joiners = customers // 100 if joiners_per_week is None else joiners_per_week
    total = customers + joiners * weeks
    rng = np.random.default_rng(seed)
    telco = default_contract()
    people = generate_customers(total, seed).set_index(telco.id_column, drop=False)
    ids = people.index
    join = np.zeros(total, dtype=np.int64)
    join[customers:] = np.repeat(np.arange(1, weeks + 1), joiners)
    at_risk = (people[telco.target_column] == "Yes").to_numpy()
    # the base's at-risk customers leave from `churned_before` weeks before it onwards;
    # joiners leave after they join
    earliest = np.where(join == 0, -churned_before, join + 1)
    churn = np.where(
        at_risk, earliest + rng.integers(0, horizon_weeks + churned_before, total), NEVER
    )
    churn = np.where(at_risk & (join > 0), join + rng.integers(1, horizon_weeks + 1, total), churn)
    churn_week = pd.Series(churn, index=ids)
    join_week = pd.Series(join, index=ids)
    tenure = pd.to_numeric(people["tenure"]).to_numpy()
    monthly = pd.to_numeric(people["MonthlyCharges"]).to_numpy()
    # a joiner starts with no tenure and nothing billed
    tenure = np.where(join > 0, 0, tenure)

    def as_of(week: int) -> pd.DataFrame:
        grown = tenure + (week - np.maximum(join, 0)) // 4 * (week >= join)
        frame = people.copy()
        frame["tenure"] = np.minimum(grown, 72).astype(str)
        frame["TotalCharges"] = np.where(grown > 0, (grown * monthly).round(2).astype(str), " ")
        frame[telco.target_column] = np.where(churn <= week, "Yes", "No")
        return frame

    base_frame = as_of(0)
    base = base_frame.loc[join == 0].reset_index(drop=True)
    extracts = []
    for week in range(1, weeks + 1):
        frame = as_of(week)
        member = join <= week
        if kind is ExtractKind.full:
            rows = member & (churn > week)
        else:
            billing = week % 4 == 0
            rows = member & ((churn == week) | (join == week) | (billing & (churn > week)))
        extracts.append((start + timedelta(weeks=week), frame.loc[rows].reset_index(drop=True)))
    return SyntheticHistory(start, base, extracts, churn_week, join_week)


def write_history(history: SyntheticHistory, folder: Path, kind: ExtractKind) -> list[Path]:
    """customers_<start>.csv (the base, a seed for CHURN_DATA_PATH) and each week's extract
    as weeks/week<NN>_<date>.<kind>.csv in `folder`: the dates in the names are the dates the
    platform records (see churn_assets.ml.data.history)."""
    written = [write_customers(history.base, folder / f"customers_{history.start}.csv")]
    for week, (day, frame) in enumerate(history.extracts, start=1):
        path = folder / "weeks" / f"week{week:02d}_{day.isoformat()}.{kind.value}.csv"
        written.append(write_customers(frame, path))
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=5000, help="customers in the base")
    parser.add_argument("--weeks", type=int, default=8, help="weekly extracts to write")
    parser.add_argument(
        "--kind", choices=[k.value for k in ExtractKind], default="full", help="extract kind"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--start",
        type=date.fromisoformat,
        help="the base's date (default: --weeks weeks before today, so the last week is today)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")


def run(args: argparse.Namespace) -> list[Path]:
    kind = ExtractKind(args.kind)
    start = args.start or today() - timedelta(weeks=args.weeks)
    history = make_history(args.customers, args.weeks, kind, args.seed, start)
    written = write_history(history, args.out, kind)
    print(
        f"wrote the base ({len(history.base)} customers, {start}) and {args.weeks} {kind} extracts"
    )
    for path in written:
        print(f"  {path}")
    return written

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
import enum
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


class Response(enum.StrEnum):
    """How a customer answers a retention offer: the truth campaigns are measured against."""

    #: leaves without an offer, stays with one: the customers offers are for
    persuadable = "persuadable"
    #: leaves either way
    lost_cause = "lost_cause"
    #: stays either way: an offer to them is money spent for nothing
    sure_thing = "sure_thing"
    #: stays unless offered: contact reminds them to shop around
    sleeping_dog = "sleeping_dog"


def responses(people: pd.DataFrame, at_risk: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each customer's response, tied to features as retention teams find it: young
    month-to-month contracts are the most persuadable; long two-year customers are the ones an
    offer most often wakes up."""
    monthly = (people["Contract"] == "Month-to-month").to_numpy()
    tenure = pd.to_numeric(people["tenure"]).to_numpy()
    persuadable = np.where(monthly & (tenure <= 24), 0.6, np.where(monthly, 0.35, 0.15))
    sleeping = np.where((people["Contract"] == "Two year").to_numpy() & (tenure >= 48), 0.3, 0.04)
    draw = rng.random(len(people))
    return np.where(
        at_risk,
        np.where(draw < persuadable, Response.persuadable, Response.lost_cause),
        np.where(draw < sleeping, Response.sleeping_dog, Response.sure_thing),
    )


@dataclass(frozen=True)
class SyntheticHistory:
    """The base (week 0), each week's extract, and the truth the extracts should record.

    Offers change the truth: `offer` applies them to the weeks after they were made, so an
    extract made after it records the churns the offers caused and prevented.
    """

    start: date
    people: pd.DataFrame
    kind: ExtractKind
    weeks: int
    #: customerID -> the week the customer churns (<= 0: before the base; NEVER: not at all).
    churn_week: pd.Series
    join_week: pd.Series
    #: customerID -> how they answer an offer (`Response`)
    response: pd.Series
    seed: int = 42

    def churn_date(self, customer: str) -> date | None:
        week = int(self.churn_week[customer])
        return None if week == NEVER else self.start + timedelta(weeks=max(week, 0))

    def as_of(self, week: int) -> pd.DataFrame:
        """Every customer as the billing system sees them in `week`."""
        join = self.join_week.to_numpy()
        churn = self.churn_week.to_numpy()
        tenure = np.where(join > 0, 0, pd.to_numeric(self.people["tenure"]).to_numpy())
        monthly = pd.to_numeric(self.people["MonthlyCharges"]).to_numpy()
        grown = tenure + (week - np.maximum(join, 0)) // 4 * (week >= join)
        frame = self.people.copy()
        frame["tenure"] = np.minimum(grown, 72).astype(str)
        frame["TotalCharges"] = np.where(grown > 0, (grown * monthly).round(2).astype(str), " ")
        frame["Churn"] = np.where(churn <= week, "Yes", "No")
        return frame

    @property
    def base(self) -> pd.DataFrame:
        return self.as_of(0).loc[self.join_week.to_numpy() == 0].reset_index(drop=True)

    def extract(self, week: int) -> tuple[date, pd.DataFrame]:
        """Week `week`'s extract (see the module docstring) with the truth as it stands."""
        frame = self.as_of(week)
        join, churn = self.join_week.to_numpy(), self.churn_week.to_numpy()
        member = join <= week
        if self.kind is ExtractKind.full:
            rows = member & (churn > week)
        else:
            billing = week % 4 == 0
            rows = member & ((churn == week) | (join == week) | (billing & (churn > week)))
        return self.start + timedelta(weeks=week), frame.loc[rows].reset_index(drop=True)

    @property
    def extracts(self) -> list[tuple[date, pd.DataFrame]]:
        return [self.extract(week) for week in range(1, self.weeks + 1)]

    def week_of(self, day: date) -> int:
        return (day - self.start).days // 7

    def left_within(self, customers: pd.Index, week: int, window_weeks: int) -> np.ndarray:
        """Whether each customer leaves after `week` and within `window_weeks` of it."""
        churn = self.churn_week.reindex(customers).to_numpy()
        return (churn > week) & (churn <= week + window_weeks)

    def offer_effect(self, customers: pd.Index, week: int, window_weeks: int) -> np.ndarray:
        """Each customer's true reduction of churn within the window if offered in `week`:
        1 for a persuadable who would leave in it, -1 for a sleeping dog still here, else 0."""
        without = self.left_within(customers, week, window_weeks)
        response = self.response.reindex(customers).to_numpy()
        active = self.churn_week.reindex(customers).to_numpy() > week
        saved = without & (response == Response.persuadable)
        woken = active & ~without & (response == Response.sleeping_dog)
        return saved.astype(float) - woken.astype(float)

    def offer(self, customers: pd.Index, week: int, window_weeks: int) -> None:
        """Make offers to `customers` in `week`: persuadables still here stay, sleeping dogs
        still here leave within the window (a week drawn for each in the customers' order, from a
        generator seeded by the history's seed and `week`)."""
        response = self.response.reindex(customers).to_numpy()
        churn = self.churn_week.reindex(customers).to_numpy()
        active = churn > week
        stays = customers[active & (response == Response.persuadable)]
        woken = customers[active & (response == Response.sleeping_dog)]
        self.churn_week.loc[stays] = NEVER
        rng = np.random.default_rng([self.seed, week])
        leaves = week + rng.integers(1, window_weeks + 1, len(woken))
        self.churn_week.loc[woken] = np.minimum(self.churn_week.loc[woken].to_numpy(), leaves)


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
    # drawn last, so the weeks above are what they were before responses existed
    response = responses(people, at_risk, np.random.default_rng([seed, 1]))
    return SyntheticHistory(
        start=start,
        people=people,
        kind=kind,
        weeks=weeks,
        churn_week=pd.Series(churn, index=ids),
        join_week=pd.Series(join, index=ids),
        response=pd.Series(response, index=ids),
        seed=seed,
    )


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

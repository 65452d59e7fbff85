"""Customer history: when each customer was first seen and when they churned.

Extracts say what they are. A *delta* extract lists only changed customers: its rows update
the snapshot, and a row whose target is a churned code (Churn = Yes) records that customer's
churn on the extract's date.
A *full* extract lists the whole active base: besides its own rows, every customer who was
active before and is missing from it has churned as of the extract's date (billing systems
usually send the active base, and without this rule churners would stay "active" for ever).
A customer an extract lists as active again after a churn has come back: the churn date is
cleared, and the earlier churn stays readable in older snapshots.

An extract's kind is the word `full` or `delta` in its name (week48.full.csv), else
CHURN_EXTRACT_KIND (delta); its date is the first ISO date in its name (2026-11-20), else the
day it is merged. History never goes backwards: an extract dated before the current snapshot
is refused, and so is one dated more than CHURN_MAX_EXTRACT_AHEAD_DAYS after today, which
would otherwise refuse every extract after it.
"""

from __future__ import annotations

import contextlib
import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from churn_assets.ml.data.contract import CHURN_DATE, FIRST_SEEN, Contract
from churn_assets.ml.data.reading import CustomerDataError

_KIND = re.compile(r"(?:^|[._\-\s])(full|delta)(?:[._\-\s]|$)", re.IGNORECASE)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


class ExtractKind(enum.StrEnum):
    delta = "delta"
    full = "full"


@dataclass(frozen=True)
class ExtractTerms:
    """How an extract is read: its kind, and the date its rows are true on."""

    kind: ExtractKind
    as_of: date


def today() -> date:
    return datetime.now(UTC).date()


def terms_of(path: Path, default_kind: ExtractKind) -> ExtractTerms:
    """The kind and date an extract's name gives, else the setting and today."""
    kind = _KIND.search(path.stem)
    found = _DATE.search(path.name)
    as_of = today()
    if found:
        # not a calendar date (2026-13-45): the name's digits mean something else
        with contextlib.suppress(ValueError):
            as_of = date(*map(int, found.groups()))
    return ExtractTerms(ExtractKind(kind.group(1).lower()) if kind else default_kind, as_of)


def check_not_ahead(name: str, as_of: date, max_ahead_days: int) -> None:
    """Refuse a date more than `max_ahead_days` after today (a typo, a wrong clock): the
    snapshot would be ahead of every extract that follows, and history never goes back."""
    latest = today() + timedelta(days=max_ahead_days)
    if as_of > latest:
        raise CustomerDataError(
            f"{name} is dated {as_of}, after {latest}: today ({today()}) plus the "
            f"{max_ahead_days} day(s) CHURN_MAX_EXTRACT_AHEAD_DAYS allows; it would refuse "
            "every extract dated before it"
        )


def churned(frame: pd.DataFrame, contract: Contract) -> pd.Series:
    """Whether each row's target reads as churned (a positive code), as the export writes it."""
    return frame[contract.target_column].astype(str).str.strip().isin(contract.target.positive)


def start_history(frame: pd.DataFrame, as_of: date, contract: Contract) -> pd.DataFrame:
    """A table with no history yet (a seed, a file of its own): everyone first seen `as_of`.

    Its churners churned on or before that date, which is all the table can say.
    """
    started = frame.copy()
    day = as_of.isoformat()
    started[FIRST_SEEN] = day
    started[CHURN_DATE] = np.where(churned(started, contract), day, "")
    return started


@dataclass
class Upsert:
    """An extract applied to the current snapshot a partition at a time: `table` gives the
    new snapshot's rows as consecutive chunks, and the counts are complete once it is read.

    Rows are updated in place and new customers appended, so an extract that changes nothing
    gives the same table, and the same snapshot. Only the extract and one partition are in
    memory at a time: landing an extract into a snapshot of a hundred million customers needs
    what the extract needs, not the snapshot.
    """

    current: Iterable[pd.DataFrame]
    #: The extract, one row per ID, the export's columns.
    latest: pd.DataFrame
    terms: ExtractTerms
    contract: Contract
    new_customers: int = 0
    updated_customers: int = 0
    churned: int = 0
    returned: int = 0
    rows_before: int = 0

    def table(self) -> Iterator[pd.DataFrame]:
        contract = self.contract
        day = self.terms.as_of.isoformat()
        latest_ids = self.latest[contract.id_column].str.strip()
        by_id = self.latest.set_index(latest_ids.to_numpy())
        columns = list(contract.columns)
        known = np.zeros(len(self.latest), dtype=bool)
        for chunk in self.current:
            merged = chunk.reset_index(drop=True)
            ids = merged[contract.id_column].str.strip()
            was_churned = merged[CHURN_DATE] != ""
            replaced = ids.isin(latest_ids).to_numpy()
            known |= latest_ids.isin(ids[replaced]).to_numpy()
            if replaced.any():
                updates = by_id.loc[ids[replaced].to_numpy()]
                merged.loc[replaced, columns] = updates[columns].to_numpy()
            now_churned = churned(merged, contract)
            # a churn keeps the date it was first recorded on; a customer listed active came
            # back
            recorded = now_churned & ~was_churned
            returned = ~now_churned & was_churned & replaced
            merged.loc[recorded, CHURN_DATE] = day
            merged.loc[returned, CHURN_DATE] = ""
            self.churned += int(recorded.sum())
            if self.terms.kind is ExtractKind.full:
                vanished = ~replaced & ~was_churned & ~now_churned
                merged.loc[vanished, contract.target_column] = contract.target.positive[0]
                merged.loc[vanished, CHURN_DATE] = day
                self.churned += int(vanished.sum())
            self.returned += int(returned.sum())
            self.rows_before += len(merged)
            yield merged
        newcomers = start_history(self.latest.loc[~known], self.terms.as_of, contract)
        self.new_customers = int((~known).sum())
        self.updated_customers = int(known.sum())
        self.churned += int(churned(newcomers, contract).sum())
        yield newcomers


def churn_dates(snapshot: pd.DataFrame, contract: Contract) -> pd.Series:
    """Each customer's churn date in a snapshot ("" while active), by customer ID."""
    dates = pd.Series(
        snapshot[CHURN_DATE].to_numpy(),
        index=snapshot[contract.id_column].str.strip().to_numpy(),
    )
    return dates[~dates.index.duplicated(keep="last")]

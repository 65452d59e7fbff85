"""Every kept campaign judged with the churns the current snapshot records (see effect)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from churn_assets.ml.campaigns import effect, ledger
from churn_assets.ml.campaigns.effect import Effect
from churn_assets.ml.evaluation import realized
from churn_assets.ml.settings import ChurnSettings


def untouched(folder: Path, campaign: ledger.Campaign, assigned: pd.Series) -> pd.Series | None:
    """The IDs of the campaign's scoring below the threshold that it assigned nothing: the
    explored customers' comparison. None when the scoring is not kept (or under two versions)."""
    versions = set(campaign.versions.values())
    if len(versions) != 1:
        return None
    path = realized.history_file(folder, date.fromisoformat(campaign.campaign_date), *versions)
    if not path.exists():
        return None
    scores = pq.read_table(path).to_pandas()
    ids = scores.iloc[:, 0].astype(str).str.strip()
    below = ~scores["offer"].to_numpy(dtype=bool)
    return ids[below & ~ids.isin(set(assigned.astype(str).str.strip())).to_numpy()]


def measured_now(settings: ChurnSettings) -> tuple[str, list[Effect]]:
    """The outcomes' date, and each campaign with an outcome so far, oldest first."""
    as_of, churn_dates = realized.outcomes_now(settings)
    folder = settings.scores_folder
    judged = []
    for campaign in ledger.campaigns(folder):
        if date.fromisoformat(campaign.campaign_date) >= date.fromisoformat(as_of):
            continue  # no outcome can have arrived
        assignments = ledger.read_assignments(folder, campaign.id)
        found = effect.judge(
            campaign,
            assignments,
            churn_dates,
            date.fromisoformat(as_of),
            untouched(folder, campaign, assignments.iloc[:, 0]),
        )
        if found is not None:
            judged.append(found)
    return as_of, judged


def effect_table(effects: list[Effect], offer_cost: float, saved_value: float) -> pd.DataFrame:
    """A row per campaign (see Effect.figures), oldest first."""
    return pd.DataFrame([e.figures(offer_cost, saved_value) for e in effects])

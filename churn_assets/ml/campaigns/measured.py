"""Every kept campaign judged with the churns the current snapshot records (see effect), and
what closed campaigns say offers do, for decisions."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from churn_assets.ml.campaigns import contacts, effect, ledger
from churn_assets.ml.campaigns.assignment import Arm, PolicyName
from churn_assets.ml.campaigns.effect import Effect
from churn_assets.ml.evaluation import realized
from churn_assets.ml.evaluation.decision import OfferEffect
from churn_assets.ml.settings import ChurnSettings


def untouched(folder: Path, campaign: ledger.Campaign, assigned: pd.Series) -> pd.Series | None:
    """The churn probability, by ID, of each customer of the campaign's scoring below the
    threshold that it assigned nothing: the explored customers' comparison. None when the
    scoring is not kept, or is not the one policy the campaign followed."""
    versions = set(campaign.versions.values())
    if len(versions) != 1 or campaign.challenger_policy:
        return None  # the kept scoring's offers are one policy's
    path = realized.history_file(folder, date.fromisoformat(campaign.campaign_date), *versions)
    if not path.exists():
        return None
    scores = realized.read_kept(path)
    ids = scores.iloc[:, 0].astype(str).str.strip()
    below = ~scores["offer"].to_numpy(dtype=bool)
    keep = below & ~ids.isin(set(assigned.astype(str).str.strip())).to_numpy()
    return pd.Series(scores["churn_probability"].to_numpy()[keep], index=ids[keep].to_numpy())


def measured_now(settings: ChurnSettings) -> tuple[str, list[Effect]]:
    """The outcomes' date, and each campaign with an outcome so far, oldest first."""
    as_of, churn_dates = realized.outcomes_now(settings)
    folder = settings.scores_folder
    logs = contacts.recorded(folder)  # read once, not once per campaign
    judged = []
    for campaign in ledger.campaigns(folder):
        if date.fromisoformat(campaign.campaign_date) >= date.fromisoformat(as_of):
            continue  # no outcome can have arrived
        assignments = ledger.read_assignments(folder, campaign.id)
        logged = contacts.of_campaign(folder, campaign.id, logs)
        others = untouched(folder, campaign, assignments.iloc[:, 0])
        for policy, rows in by_policy(campaign, assignments):
            found = effect.judge(
                campaign,
                rows,
                churn_dates,
                date.fromisoformat(as_of),
                None if others is None else others.index.to_series(),
                logged,
                policy,
            )
            if found is not None:
                judged.append(found)
    return as_of, judged


def by_policy(
    campaign: ledger.Campaign, assignments: pd.DataFrame
) -> list[tuple[str, pd.DataFrame]]:
    """The campaign's assignments per policy it followed: production's alone, unless it had a
    challenger (campaigns kept before champion/challenger have no `policy` column)."""
    if not campaign.challenger_policy or "policy" not in assignments:
        return [(PolicyName.production.value, assignments)]
    return [
        (name.value, assignments.loc[assignments["policy"] == name.value].reset_index(drop=True))
        for name in PolicyName
    ]


def effect_table(effects: list[Effect], offer_cost: float, saved_value: float) -> pd.DataFrame:
    """A row per campaign (see Effect.figures), oldest first."""
    return pd.DataFrame([e.figures(offer_cost, saved_value) for e in effects])


def offer_effect(settings: ChurnSettings) -> OfferEffect | None:
    """What offers do by probability band, from every closed campaign pooled; None before
    CHURN_EFFECT_MIN_CAMPAIGNS have closed (decisions then keep the assumed effect).

    The targets of all closed campaigns are pooled and cut into ten bands of probability
    (deciles), each with its own reduction (control - treatment churn; the pooled targets'
    where a band lacks an arm). Below the lowest target: the explored customers against the
    untouched ones, where campaigns explored; without that evidence, no effect, so the
    threshold never goes below what was measured. Scores of different versions are pooled as
    probabilities, which calibration keeps comparable.
    """
    as_of, churn_dates = realized.outcomes_now(settings)
    folder = settings.scores_folder
    closed = [c for c in ledger.campaigns(folder) if c.closes <= date.fromisoformat(as_of)]
    if len(closed) < settings.effect_min_campaigns:
        return None
    # A campaign whose targets an uplift model chose holds the customers it expected the most
    # of: their effect is no estimate of the effect by probability decile.
    closed = [c for c in closed if c.uplift_version is None]
    if not closed:
        return None
    targets, explored, unexplored = [], [], []
    for campaign in closed:
        assignments = ledger.read_assignments(folder, campaign.id)
        ids, arm = assignments.iloc[:, 0], assignments["arm"].to_numpy()
        start = date.fromisoformat(campaign.campaign_date)
        left = effect.left_within(ids, churn_dates, start, campaign.closes)
        aimed = (arm == Arm.treatment.value) | (arm == Arm.control.value)
        targets.append(
            pd.DataFrame(
                {
                    "probability": assignments["churn_probability"].to_numpy()[aimed],
                    "treated": arm[aimed] == Arm.treatment.value,
                    "left": left[aimed],
                }
            )
        )
        others = untouched(folder, campaign, ids)
        if others is not None:  # the explored count only beside the customers left untouched
            explored.append(left[arm == Arm.explore.value])
            unexplored.append(
                effect.left_within(others.index.to_series(), churn_dates, start, campaign.closes)
            )
    pooled = pd.concat(targets, ignore_index=True)
    overall = effect.Comparison.of(
        pooled["left"].to_numpy()[pooled["treated"]], pooled["left"].to_numpy()[~pooled["treated"]]
    )
    if overall is None:
        return None
    band = pd.qcut(pooled["probability"].rank(method="first"), 10, labels=False)
    lower, reduction = [0.0], []
    below = effect.Comparison.of(
        np.concatenate(explored) if explored else np.array([], bool),
        np.concatenate(unexplored) if unexplored else np.array([], bool),
    )
    reduction.append(below.reduction if below is not None else 0.0)
    for _, rows in pooled.groupby(band, sort=True):
        found = effect.Comparison.of(
            rows["left"].to_numpy()[rows["treated"]], rows["left"].to_numpy()[~rows["treated"]]
        )
        lower.append(float(rows["probability"].min()))
        reduction.append(found.reduction if found is not None else overall.reduction)
    names = ", ".join(c.id for c in closed)
    return OfferEffect(f"measured on campaigns {names}", np.array(lower), np.array(reduction))


#: What campaign_effect keeps beside the campaigns for the console and other readers: the
#: effect table, its plot, and the champion/challenger comparisons (replaced each time).
EFFECTS_FILE, EFFECTS_PLOT, DUELS_FILE = "effects.csv", "effects.png", "champion_challenger.csv"


def keep_effects(
    folder: Path, table: pd.DataFrame, png: bytes | None, duels: pd.DataFrame | None
) -> None:
    """Write the latest measurement beside the campaigns, each file in one rename."""
    from churn_assets.ml.files import replacing

    kept = folder / ledger.FOLDER
    with replacing(kept / EFFECTS_FILE) as temporary:
        table.to_csv(temporary, index=False)
    for name, content in ((EFFECTS_PLOT, png), (DUELS_FILE, duels)):
        if content is None:
            (kept / name).unlink(missing_ok=True)
            continue
        with replacing(kept / name) as temporary:
            if isinstance(content, bytes):
                temporary.write_bytes(content)
            else:
                content.to_csv(temporary, index=False)

"""The uplift model: inverse-propensity estimates are unbiased under the campaigns' design, and
on a world whose offer effects are known, the T-learner's targeting beats targeting by churn
probability, measured on held-out customers as the truth says."""

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn_assets.ml.campaigns import ledger, uplift
from churn_assets.ml.data.cleaning import clean_customers
from churn_assets.ml.data.contract import default_contract
from churn_assets.ml.data.synthetic import generate_customers
from churn_assets.ml.evaluation import realized

SAVED, COST = 500.0, 100.0


def _world(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers with features, the campaigns' design (targets by a churn score at 0.3, 30%
    control; 10% explored below), outcomes drawn from each one's truth, and that truth (the
    churn an offer prevents): young month-to-month customers are persuadable (0.4 -> 0.1),
    older month-to-month ones lost causes (0.5 either way), long two-year ones sleeping dogs
    (0.05 -> 0.15), the rest stay either way (0.05)."""
    contract = default_contract()
    cleaned, _ = clean_customers(generate_customers(n, seed), contract)
    rng = np.random.default_rng(seed)
    monthly = (cleaned["Contract"] == "Month-to-month").to_numpy()
    tenure = cleaned["tenure"].to_numpy(dtype=float)
    two_year = (cleaned["Contract"] == "Two year").to_numpy()
    persuadable = monthly & (tenure <= 24)
    lost = monthly & (tenure > 24)
    dog = two_year & (tenure >= 48)
    base = np.where(persuadable, 0.4, np.where(lost, 0.5, 0.05))
    effect = np.where(persuadable, 0.3, np.where(dog, -0.1, 0.0))
    score = np.clip(base + rng.normal(0, 0.05, n), 0, 1)
    targeted = score >= 0.3
    propensity = np.where(targeted, 0.7, 0.1)
    treated = rng.random(n) < propensity
    left = rng.random(n) < np.where(treated, base - effect, base)
    rows = cleaned.assign(
        **{
            uplift.TREATED: treated,
            uplift.LEFT: left,
            uplift.PROPENSITY: propensity,
            uplift.PROBABILITY: score,
            uplift.TARGETED: targeted,
            uplift.CAMPAIGN: "c1",
        }
    )
    return rows.drop(columns=[contract.target_column]), effect


def test_inverse_propensity_estimates_are_unbiased_under_the_design() -> None:
    rows, effect = _world(40_000, 3)
    estimates = uplift.prevented(rows)
    # the mean estimate matches the mean truth within four standard errors
    error = estimates.std() / np.sqrt(len(rows))
    assert abs(estimates.mean() - effect.mean()) < 4 * error
    targeted = rows[uplift.TARGETED].to_numpy()
    below = estimates[~targeted]
    assert abs(below.mean() - effect[~targeted].mean()) < 4 * below.std() / np.sqrt(len(below))


def test_uplift_targeting_beats_probability_targeting_as_the_truth_says() -> None:
    rows, effect = _world(30_000, 5)
    found = uplift.evaluate(rows, default_contract(), 1_000, SAVED, COST, uplift.SEED)
    assert isinstance(found, uplift.Evaluation)
    v = found.verdict
    held = uplift.held_out(rows, default_contract())
    truth = effect[held] * SAVED - COST
    by_uplift = found.uplift * SAVED - COST > 0
    by_probability = found.held_out[uplift.TARGETED].to_numpy()
    true_uplift = 1000 * truth[by_uplift].sum() / len(truth)
    true_probability = 1000 * truth[by_probability].sum() / len(truth)
    assert true_uplift > true_probability + 5_000  # the world's own answer
    assert v.beats_probability, v.figures()
    assert v.words == "uplift targeting beats probability targeting"
    # the measured values are the truth's within the interval's reach
    assert abs(v.difference - (true_uplift - true_probability)) < (
        v.difference_high - v.difference_low
    )
    assert v.qini_uplift > v.qini_probability
    assert v.uplift_offers < v.probability_offers  # it leaves the lost causes alone
    # the learner ranks the persuadables first and the sleeping dogs last
    test = found.held_out
    young_monthly = (test["Contract"] == "Month-to-month").to_numpy() & (
        test["tenure"].to_numpy(dtype=float) <= 24
    )
    assert found.uplift[young_monthly].mean() > 0.2
    assert found.uplift[effect[held] < 0].mean() < 0


def test_a_previous_versions_picks_alone_are_fitted_on_but_never_judged_on() -> None:
    """A champion/challenger campaign whose production targets an uplift version chose keeps
    only those picks: judged on them, both targetings would be compared among the customers
    that version liked. Its rows join the fit (by customer, as every row) and not the verdict."""
    contract = default_contract()
    rows, _ = _world(20_000, 11)
    young_monthly = (rows["Contract"] == "Month-to-month") & (rows["tenure"] <= 24)
    picks = rows.loc[young_monthly].assign(**{uplift.CAMPAIGN: "c2", uplift.SELECTED: True})
    both = pd.concat([rows.assign(**{uplift.SELECTED: False}), picks], ignore_index=True)
    found = uplift.evaluate(both, contract, 1_000, SAVED, COST, uplift.SEED)
    assert isinstance(found, uplift.Evaluation)
    assert not found.held_out[uplift.SELECTED].any()
    assert set(found.held_out[uplift.CAMPAIGN]) == {"c1"}
    assert len(found.held_out) == int(uplift.held_out(rows, contract).sum())
    # unflagged, the same picks would have joined the verdict
    unflagged = uplift.evaluate(
        both.assign(**{uplift.SELECTED: False}), contract, 1_000, SAVED, COST, uplift.SEED
    )
    assert isinstance(unflagged, uplift.Evaluation)
    assert len(unflagged.held_out) > len(found.held_out)


def _uplift_chosen_campaign(folder: Path, explore_fraction: float) -> ledger.Campaign:
    """A campaign whose production targets uplift version 1 chose (c0-c3, one held back),
    with c4 explored when there is a slice, and its scoring kept (c0-c9)."""
    campaign = ledger.Campaign(
        id="2026-11-02-v2",
        campaign_date="2026-11-02",
        window_days=21,
        policy={"threshold": 0.5, "control_fraction": 0.25, "explore_fraction": explore_fraction},
        versions={"production": "2"},
        uplift_version="1",
    )
    arms = ["treatment", "treatment", "treatment", "control"]
    arms += ["explore"] if explore_fraction else []
    assigned = pd.DataFrame(
        {
            "customerID": [f"c{i}" for i in range(len(arms))],
            "arm": arms,
            "churn_probability": [0.9, 0.2, 0.6, 0.1, 0.3][: len(arms)],
            "model_version": "2",
            "policy": "production",
        }
    )
    path = ledger.assignments_file(folder, campaign.id)
    path.parent.mkdir(parents=True)
    assigned.to_parquet(path)
    kept = realized.history_file(folder, date(2026, 11, 2), "2")
    kept.parent.mkdir(parents=True)
    scores = {"customerID": [f"c{i}" for i in range(10)], "churn_probability": 0.3}
    pd.DataFrame({**scores, "offer": [i < 4 for i in range(10)]}).to_parquet(kept)
    return campaign


@pytest.mark.parametrize(("explore_fraction", "selected"), [(0.1, False), (0.0, True)])
def test_an_uplift_versions_picks_are_judged_only_beside_the_rest_of_their_scoring(
    tmp_path: Path, explore_fraction: float, selected: bool
) -> None:
    """With an exploration slice the campaign's rows are its whole scoring (picks, explored,
    untouched); without one they are the uplift version's picks alone: never judged on."""
    design = uplift._design(tmp_path, _uplift_chosen_campaign(tmp_path, explore_fraction))
    picks = design.loc[["c0", "c1", "c2", "c3"]]
    assert (picks[uplift.SELECTED] == selected).all(), design
    assert list(picks[uplift.TARGETED]) == [True, False, True, False]  # by the threshold
    assert len(design) == (10 if explore_fraction else 4)
    assert not design.drop(index=picks.index)[uplift.SELECTED].any()


def test_too_few_outcomes_fit_nothing_and_say_so() -> None:
    rows, _ = _world(2_000, 7)
    found = uplift.evaluate(rows, default_contract(), 1_000, SAVED, COST, uplift.SEED)
    assert isinstance(found, uplift.TooFewOutcomes)
    assert found.needed == 1_000 and found.treated < 1_000
    assert "CHURN_UPLIFT_MIN_OUTCOMES" in found.words


def test_the_qini_coefficient_rewards_ranking_the_effect_first() -> None:
    estimates = np.array([1.0, 1.0, 0.0, 0.0, -1.0])
    assert uplift.qini(estimates, np.array([5, 4, 3, 2, 1])) > 0
    assert uplift.qini(estimates, np.array([1, 2, 3, 4, 5])) < 0
    assert uplift.qini(np.array([]), np.array([])) == 0
    assert uplift.qini(estimates, np.array([5, 4, 3, 2, 1])) == pytest.approx(
        np.mean(np.cumsum(estimates) - np.arange(1, 6) / 5) / 5
    )

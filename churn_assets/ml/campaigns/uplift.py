"""Who stays *because* of an offer: an uplift model learned from the campaigns' randomized arms,
and whether targeting by it beats targeting by churn probability, judged on held-out customers.

**The experiment.** Every closed campaign is a randomized experiment over its scoring: among the
policy's targets a customer was treated with probability 1 - control fraction, below the
threshold with probability explore fraction (explored against the untouched, when the kept
scoring says who they were). The design's probabilities (propensities) are known exactly, so
nothing is estimated about who got offers. Each customer's features are those of the snapshot
dated the campaign's day (`point_in_time.observe`, the same rows training uses), the outcome
whether the snapshots record them leaving within the campaign's window. Customers a campaign
held, and champion/challenger campaigns' untargeted (their kept scoring is one policy's), are
left out. So where an uplift version chose a champion/challenger campaign's production targets
(or any policy's, without an exploration slice), only its picks are there: those rows are
never judged on, since a judgement on them would compare both targetings among the customers
the previous version liked (its verdict would lean to uplift), not on the customer base; the
held-out customers' rows among them are left out, the others fitted on.

**The learner** is a T-learner on LightGBM: one classifier of churn among the treated, one among
the untreated, on the platform's preprocessor; a customer's uplift is the second's probability
less the first's (the churn an offer prevents), and their expected incremental value
uplift x CHURN_SAVED_CUSTOMER_VALUE - CHURN_OFFER_COST. Hand-written (two fits and a difference)
rather than causalml or scikit-uplift: neither is in the lock, causalml pins its own scientific
stack, and scikit-uplift's TwoModels is the same two fits without the preprocessor, the seeds or
the design's propensities this needs around them.

**The judgement** is on customers held out by a hash of their ID (a customer stays on one side
across campaigns), never seen by the fits. A policy (a set of customers to offer) is valued by
inverse propensity weighting: each customer's (1 - t) y / (1 - e) - t y / e is an unbiased
estimate of the churn an offer would prevent for them (t: treated, y: left, e: propensity), so a
policy's value per 1,000 customers is 1,000 / n x the sum over its customers of that x saved
value - offer cost. Targeting by uplift (expected incremental value above 0) is compared with
targeting by churn probability as the campaigns did (their thresholds), with a bootstrap 95%
interval of the difference; the Qini coefficient of each ranking (the same weighted estimate,
cumulated down the ranking, against random order) says which ranks better. Uplift targeting
beats probability targeting when the interval lies above 0. The bootstrap resamples customers
(a customer in several campaigns brings all their rows), so repeated customers do not narrow
the interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churn_assets.ml.campaigns import ledger, measured
from churn_assets.ml.campaigns.assignment import Arm, draws
from churn_assets.ml.campaigns.learner import UpliftTLearner, expected_incremental_value
from churn_assets.ml.data import cleaning, point_in_time
from churn_assets.ml.data.contract import Contract
from churn_assets.ml.data.snapshots import SnapshotStore
from churn_assets.ml.files import keep_json, kept_json

if TYPE_CHECKING:  # the learner's libraries load only where a model is fitted
    import lightgbm as lgb
    from sklearn.pipeline import Pipeline

#: The learner's and the bootstrap's seed: the same experiment fits and judges the same way.
SEED = 42
#: Share of experimental customers held out to judge the model.
HOLDOUT_SHARE = 0.3
_BOOTSTRAP = 500
#: Columns an experiment row carries besides the contract's features.
TREATED, LEFT, PROPENSITY, PROBABILITY, TARGETED, CAMPAIGN, SELECTED = (
    "treated",
    "left",
    "propensity",
    "churn_probability",
    "targeted",
    "campaign",
    "selected_by_uplift",
)


def experiments(
    store: SnapshotStore, scores_folder: Path, as_of: date, churn_dates: pd.Series
) -> pd.DataFrame:
    """Every campaign closed by `as_of`, its randomized customers with their features on its
    day, whether they were treated, left within its window (by `churn_dates`, the newest
    snapshot's), the design's propensity, and the churn probability and targeting the campaign
    used (see the module docstring)."""
    contract = store.contract
    current = store.current()
    if current is None:
        return pd.DataFrame()
    days = point_in_time.snapshot_days(store.lineage(current.id))
    frames = []
    for campaign in ledger.campaigns(scores_folder):
        day = date.fromisoformat(campaign.campaign_date)
        if campaign.closes > as_of or day not in days:
            continue
        snapshot = store.read(days[day].id)
        cleaned, _ = cleaning.clean_customers(snapshot, contract, require_both_classes=False)
        observed = point_in_time.observe(
            cleaned, churn_dates, day, campaign.window_days, contract
        ).set_index(contract.id_column, drop=False)
        arms = _design(scores_folder, campaign)
        rows = observed.join(arms, how="inner")
        rows[LEFT] = rows.pop(contract.target_column).astype(bool)
        rows[CAMPAIGN] = campaign.id
        frames.append(rows.reset_index(drop=True))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _design(folder: Path, campaign: ledger.Campaign) -> pd.DataFrame:
    """The campaign's randomized customers by ID: treated, propensity, probability, and
    whether probability targeting (the campaign's threshold) picks them.

    The propensities follow whom the campaign aimed at (its targets, treated but for the
    control fraction; the rest explored); where an uplift model chose production's targets,
    probability targeting is the threshold's, not the aim."""
    assignments = ledger.read_assignments(folder, campaign.id)
    ids = assignments.iloc[:, 0].astype(str).str.strip()
    arm = assignments["arm"].to_numpy()
    control_fraction = float(campaign.policy["control_fraction"])
    explore_fraction = float(campaign.policy["explore_fraction"])
    threshold = float(campaign.policy["threshold"])
    aimed = (arm == Arm.treatment.value) | (arm == Arm.control.value)
    probability = assignments["churn_probability"].to_numpy()
    chose = np.zeros(len(assignments), dtype=bool)  # an uplift version chose them
    if campaign.uplift_version is not None:
        policy = assignments.get("policy", pd.Series("production", index=assignments.index))
        chose = (policy == "production").to_numpy()
    by_threshold = np.where(chose, probability >= threshold, True)
    below = measured.untouched(folder, campaign, ids)
    # the rest of the scoring joins (explored and untouched) only with an exploration slice
    complete = below is not None and explore_fraction > 0
    parts = [
        pd.DataFrame(
            {
                TREATED: arm[aimed] == Arm.treatment.value,
                PROPENSITY: 1 - control_fraction,
                PROBABILITY: probability[aimed],
                TARGETED: by_threshold[aimed],
                # its picks without the rest of their scoring (a champion/challenger campaign
                # keeps no scoring of one policy; no exploration slice): never judged on
                SELECTED: chose[aimed] & (not complete),
            },
            index=ids[aimed].to_numpy(),
        )
    ]
    if below is not None and complete:
        explored = arm == Arm.explore.value
        parts.append(
            pd.DataFrame(
                {
                    TREATED: True,
                    SELECTED: False,
                    PROPENSITY: explore_fraction,
                    PROBABILITY: probability[explored],
                    TARGETED: (probability[explored] >= threshold)
                    if campaign.uplift_version is not None
                    else False,
                },
                index=ids[explored].to_numpy(),
            )
        )
        parts.append(
            pd.DataFrame(
                {
                    TREATED: False,
                    SELECTED: False,
                    PROPENSITY: explore_fraction,
                    PROBABILITY: below.to_numpy(),
                    TARGETED: (below.to_numpy() >= threshold)
                    if campaign.uplift_version is not None
                    else False,
                },
                index=below.index.to_numpy(),
            )
        )
    return pd.concat(parts)


def held_out(rows: pd.DataFrame, contract: Contract) -> np.ndarray:
    """Which rows judge the model: a hash of the customer ID, the same in every campaign."""
    return draws("uplift-holdout", rows[contract.id_column].astype(str)) < HOLDOUT_SHARE


def fit(rows: pd.DataFrame, contract: Contract, seed: int) -> Pipeline:
    """The T-learner on `rows` (treated and untreated customers both present), behind the
    platform's preprocessor fitted on them: one pipeline, as it is logged and served."""
    import lightgbm as lgb
    from sklearn.pipeline import Pipeline

    from churn_assets.ml.model.features import categorical_positions, fit_preprocessor

    features = list(contract.feature_columns)
    preprocessor = fit_preprocessor(rows, contract)
    categorical = categorical_positions(preprocessor)

    def arm(treated: bool) -> lgb.LGBMClassifier:
        mine = rows.loc[rows[TREATED].to_numpy() == treated]
        model = lgb.LGBMClassifier(
            n_estimators=200,
            learning_rate=0.03,
            num_leaves=15,
            min_child_samples=40,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            random_state=seed,
            deterministic=True,
            force_col_wise=True,
            verbose=-1,
        )
        model.fit(
            preprocessor.transform(mine[features]),
            mine[LEFT].to_numpy(dtype=int),
            categorical_feature=categorical,
        )
        return model

    return Pipeline(
        [("preprocess", preprocessor), ("model", UpliftTLearner(arm(True), arm(False)))]
    )


def predicted_uplift(pipeline: Pipeline, rows: pd.DataFrame) -> np.ndarray:
    """The churn an offer prevents for each of `rows` (customers with the contract's
    features), by a registered or just fitted uplift pipeline."""
    from churn_assets.ml.model.batch import model_matrix

    model = pipeline.named_steps["model"]
    if not isinstance(model, UpliftTLearner):  # a registered churn model under its name
        raise TypeError(f"not an uplift model: its pipeline ends in a {type(model).__name__}")
    return model.uplift_of_matrix(model_matrix(pipeline, rows))


def prevented(rows: pd.DataFrame) -> np.ndarray:
    """Each customer's inverse-propensity estimate of the churn an offer prevents for them."""
    t = rows[TREATED].to_numpy(dtype=bool)
    y = rows[LEFT].to_numpy(dtype=float)
    e = rows[PROPENSITY].to_numpy(dtype=float)
    return np.where(t, -y / e, y / (1 - e))


@dataclass(frozen=True)
class UpliftVerdict:
    """Uplift targeting against probability targeting on the held-out customers."""

    customers: int
    treated: int
    untreated: int
    #: value per 1,000 held-out customers of each targeting, and how many each offers
    uplift_value: float
    probability_value: float
    uplift_offers: int
    probability_offers: int
    #: uplift - probability, with a bootstrap 95% interval
    difference: float
    difference_low: float
    difference_high: float
    qini_uplift: float
    qini_probability: float
    #: probability targeting cut to as many offers as uplift targeting makes, per 1,000
    probability_value_same_offers: float

    @property
    def beats_probability(self) -> bool:
        return self.difference_low > 0

    @property
    def words(self) -> str:
        if self.beats_probability:
            return "uplift targeting beats probability targeting"
        if self.difference_high < 0:
            return "probability targeting beats uplift targeting"
        return "uplift targeting is not distinguishable from probability targeting"

    def figures(self) -> dict[str, float | int | str]:
        return {
            "held_out_customers": self.customers,
            "held_out_treated": self.treated,
            "held_out_untreated": self.untreated,
            "uplift_value_per_1000": self.uplift_value,
            "probability_value_per_1000": self.probability_value,
            "uplift_offers": self.uplift_offers,
            "probability_offers": self.probability_offers,
            "difference_per_1000": self.difference,
            "difference_low": self.difference_low,
            "difference_high": self.difference_high,
            "qini_uplift": self.qini_uplift,
            "qini_probability": self.qini_probability,
            "probability_value_same_offers_per_1000": self.probability_value_same_offers,
            "verdict": self.words,
        }


def judge(
    rows: pd.DataFrame,
    uplift: np.ndarray,
    saved_value: float,
    offer_cost: float,
    seed: int,
    customers: pd.Series,
) -> UpliftVerdict:
    """Targeting by uplift (expected incremental value above 0) against targeting by churn
    probability as the campaigns did, on held-out `rows` with the model's `uplift`
    (`customers`: each row's customer, the bootstrap's unit)."""
    gain = prevented(rows) * saved_value - offer_cost
    by_uplift = expected_incremental_value(uplift, saved_value, offer_cost) > 0
    by_probability = rows[TARGETED].to_numpy(dtype=bool)
    n = len(rows)
    per_customer = np.where(by_uplift, gain, 0.0) - np.where(by_probability, gain, 0.0)
    difference, low, high = _paired(per_customer, customers, seed)
    t = rows[TREATED].to_numpy(dtype=bool)
    probability = rows[PROBABILITY].to_numpy(dtype=float)
    top = np.zeros(n, dtype=bool)
    top[np.argsort(-probability, kind="stable")[: int(by_uplift.sum())]] = True
    return UpliftVerdict(
        customers=n,
        treated=int(t.sum()),
        untreated=int((~t).sum()),
        uplift_value=1000 * float(np.where(by_uplift, gain, 0.0).sum()) / n,
        probability_value=1000 * float(np.where(by_probability, gain, 0.0).sum()) / n,
        uplift_offers=int(by_uplift.sum()),
        probability_offers=int(by_probability.sum()),
        difference=difference,
        difference_low=low,
        difference_high=high,
        qini_uplift=qini(prevented(rows), uplift),
        qini_probability=qini(prevented(rows), probability),
        probability_value_same_offers=1000 * float(np.where(top, gain, 0.0).sum()) / n,
    )


def _paired(per_row: np.ndarray, customers: pd.Series, seed: int) -> tuple[float, float, float]:
    """The mean of per-row differences per 1,000 rows, with a bootstrap 95% interval that
    resamples customers, not rows: a customer in several campaigns is one draw with all their
    rows (their outcomes are not independent), and both policies are judged on the same draw."""
    codes, _ = pd.factorize(customers.to_numpy())
    sums = np.bincount(codes, weights=per_row)
    sizes = np.bincount(codes).astype(float)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(sums), size=(_BOOTSTRAP, len(sums)))
    spread = 1000 * sums[drawn].sum(axis=1) / sizes[drawn].sum(axis=1)
    low, high = np.quantile(spread, [0.025, 0.975])
    return 1000 * float(per_row.mean()), float(low), float(high)


@dataclass(frozen=True)
class AgainstProduction:
    """A new uplift version's targeting against the production uplift version's, on the same
    held-out customers at the same prices: per 1,000 customers, new - production."""

    version: str
    difference: float
    difference_low: float
    difference_high: float
    #: production's targeting against the campaigns' probability targeting on the same
    #: customers (per 1,000: difference, low, high); None where not measured
    versus_probability: tuple[float, float, float] | None = None

    @property
    def not_worse(self) -> bool:
        """Refused only when production's targeting is clearly better (the whole interval
        below 0): a version no better but fitted on more outcomes replaces it."""
        return self.difference_high >= 0

    @property
    def words(self) -> str:
        if not self.not_worse:
            return f"the production uplift version {self.version} targets better"
        return f"not worse than the production uplift version {self.version}"

    def figures(self) -> dict[str, float | str]:
        shown: dict[str, float | str] = {
            "production_uplift_version": self.version,
            "minus_production_per_1000": self.difference,
            "minus_production_low": self.difference_low,
            "minus_production_high": self.difference_high,
        }
        if self.versus_probability is not None:
            difference, low, high = self.versus_probability
            shown["production_minus_probability_per_1000"] = difference
            shown["production_minus_probability_low"] = low
            shown["production_minus_probability_high"] = high
        return shown


def against_production(
    rows: pd.DataFrame,
    uplift: np.ndarray,
    production: np.ndarray,
    version: str,
    saved_value: float,
    offer_cost: float,
    seed: int,
    customers: pd.Series,
) -> AgainstProduction:
    """Targeting by `uplift` against targeting by the production version's `production`
    uplift, each offering where its expected incremental value is above 0 (`customers`: each
    row's customer, the bootstrap's unit); and production's targeting against the campaigns'
    probability targeting, which says whether production still earns its place. No version
    was fitted on these customers (the split is by customer, the same for every version), but
    production's own verdict was judged on the earlier campaigns' share of them, which favours
    it: the warning errs on the side of keeping it."""
    gain = prevented(rows) * saved_value - offer_cost
    mine = expected_incremental_value(uplift, saved_value, offer_cost) > 0
    theirs = np.where(expected_incremental_value(production, saved_value, offer_cost) > 0, gain, 0)
    by_probability = np.where(rows[TARGETED].to_numpy(dtype=bool), gain, 0.0)
    return AgainstProduction(
        version,
        *_paired(np.where(mine, gain, 0.0) - theirs, customers, seed),
        versus_probability=_paired(theirs - by_probability, customers, seed),
    )


def production_alert(
    verdict: dict[str, object], production_now: Callable[[], str | None]
) -> str | None:
    """What the uplift check warns of, from the kept verdict (`keep_verdict`): the uplift
    version judged there, still in production (`production_now`: the registry's, asked only
    when the figures say it lost, so a rollback or a later promotion ends the warning),
    targets clearly worse than probability targeting on the held-out customers. None when it
    does not, or when nothing says so."""
    figures = [
        verdict.get(f"production_minus_probability_{part}") for part in ("per_1000", "low", "high")
    ]
    version = verdict.get("production_uplift_version")
    promoted = str(verdict.get("promotion", "")).startswith("promoted")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in figures):
        return None
    difference, low, high = (float(v) for v in figures)  # type: ignore[arg-type]
    if high >= 0 or version is None or promoted or str(version) != production_now():
        return None
    return (
        f"the production uplift version {version} targets worse than the campaigns' "
        f"probability targeting on the held-out customers: {difference:+,.0f} per 1,000 "
        f"customers [{low:+,.0f}, {high:+,.0f}]; `churn rollback --uplift` moves it back (or "
        "withdraws a first version, so offers go by probability)"
    )


@dataclass(frozen=True)
class Evaluation:
    """The model fitted on the experiment's training customers, judged on the others."""

    pipeline: Pipeline
    held_out: pd.DataFrame
    uplift: np.ndarray
    verdict: UpliftVerdict


@dataclass(frozen=True)
class TooFewOutcomes:
    """Why no model was fitted: the outcomes per arm so far, and how many are needed."""

    treated: int
    untreated: int
    needed: int

    @property
    def words(self) -> str:
        return (
            f"not enough outcomes for an uplift model yet: {self.treated:,} treated and "
            f"{self.untreated:,} untreated customers with a closed window, "
            f"{self.needed:,} per arm needed (CHURN_UPLIFT_MIN_OUTCOMES)"
        )


def evaluate(
    rows: pd.DataFrame,
    contract: Contract,
    min_outcomes: int,
    saved_value: float,
    offer_cost: float,
    seed: int,
) -> Evaluation | TooFewOutcomes:
    """Fit on the experiment's training customers and judge on the held-out ones, once each
    arm has `min_outcomes` customers with an outcome."""
    judged = held_out(rows, contract) if len(rows) else np.zeros(0, dtype=bool)
    if len(rows) and SELECTED in rows:
        # a previous version's picks alone are never judged on (both targetings would be
        # compared among the customers it liked); a held-out customer's are not fitted on
        # either (the held-out stay unseen), so those rows are left out, the rest fitted on
        kept = ~(judged & rows[SELECTED].to_numpy(dtype=bool))
        rows, judged = rows.loc[kept], judged[kept]
    treated = int(rows[TREATED].sum()) if len(rows) else 0
    untreated = len(rows) - treated
    if min(treated, untreated) < min_outcomes or judged.all() or not judged.any():
        return TooFewOutcomes(treated, untreated, min_outcomes)
    pipeline = fit(rows.loc[~judged], contract, seed)
    test = rows.loc[judged].reset_index(drop=True)
    uplift = predicted_uplift(pipeline, test)
    verdict = judge(test, uplift, saved_value, offer_cost, seed, test[contract.id_column])
    return Evaluation(pipeline, test, uplift, verdict)


def qini(estimates: np.ndarray, score: np.ndarray) -> float:
    """The area between the cumulated prevented churn down the ranking by `score` and random
    order, per customer (positive: the ranking puts the effect first)."""
    n = len(estimates)
    if not n:
        return 0.0
    curve = np.cumsum(estimates[np.argsort(-score, kind="stable")])
    random = np.arange(1, n + 1) / n * curve[-1]
    return float(np.mean(curve - random) / n)


#: The latest judgement, beside the campaigns, for `churn campaigns` and the retention team.
VERDICT_FILE = "uplift_verdict.json"


def keep_verdict(scores_folder: Path, figures: dict[str, object]) -> Path:
    """Write the latest judgement (or why there is none) in one rename."""
    return keep_json(scores_folder / ledger.FOLDER / VERDICT_FILE, figures)


def latest_verdict(scores_folder: Path) -> dict[str, object] | None:
    """The judgement `keep_verdict` wrote last; None before any (or if it is not readable)."""
    return kept_json(scores_folder / ledger.FOLDER / VERDICT_FILE)

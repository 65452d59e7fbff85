"""What a campaign's offers did, measured on its randomized groups with the churns recorded since.

Each campaign is judged by assignment (intent to treat): a customer counts as a churner when
the snapshots record them leaving within the campaign's window (after its date, up to
`window_days` later, or up to the outcomes' date while the window is open). The treatment
arm's churn rate against the control's gives the offers' effect on the customers the policy
targets: the **reduction** in churn rate (control - treatment; positive: offers keep
customers, negative: they push them out) with a 95% interval, retained customers per 1,000
offers, and the value of 1,000 offers at the campaign's costs. The same comparison below the
threshold (the explored customers against the other untargeted ones the campaign did not touch)
says whether offers work where the model would not send them.

The interval is Newcombe's hybrid score interval for a difference of two proportions (method
10 of Newcombe 1998, Wilson intervals per arm): it stays inside [-1, 1] and keeps its coverage
with small control groups and rates near 0, where the textbook Wald interval does not.
Hand-written (ten lines) because statsmodels, which has it, is not otherwise a dependency; a
test holds it equal to statsmodels' `confint_proportions_2indep(method="newcomb")`.

Where a contact log says what the team did (see contacts), the campaign is also judged per
protocol: the treated customers who were contacted against the control customers who were not.
That comparison is what the team asks ("did the calls work?") but is not randomized: who gets
reached is chosen by the world, not the draw, so it is shown beside the measure by assignment,
never instead of it. The effect per contact (Bloom's estimator: the reduction by assignment
divided by how many more treated than control customers were contacted, shown only when that
difference is at least 5 points) stays randomized and says what each contact bought when
contacts, not offers, are what the effect needs; it carries the reduction's uncertainty divided
by the same difference, and no interval of its own is shown.

Where offers work is shown by decile of the churn probability among the targets, and by the
Qini curve: targets ranked by probability, for each top share the customers retained among its
treated (its control churn rate applied to its treated, less its treated churners). The Qini
coefficient is the area between that curve and the straight line of random targeting, per
treated customer: positive when ranking by probability puts the offers' effect at the top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from statistics import NormalDist

import numpy as np
import pandas as pd

from churn_assets.ml.campaigns.assignment import Arm, PolicyName
from churn_assets.ml.campaigns.ledger import Campaign

_Z = 1.959963984540054  # the 97.5th percentile of the standard normal: 95% two-sided
#: The least difference in contact rates (treated - control) the effect per contact is divided
#: by: below it the ratio says more about the noise than about the contacts.
_MIN_CONTACT_GAP = 0.05


def wilson(successes: int, trials: int, z: float = _Z) -> tuple[float, float]:
    """Wilson's score interval of one proportion."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    )
    return centre - half, centre + half


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = _Z) -> tuple[float, float]:
    """95% interval of p1 - p2 (see the module docstring)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    difference = p1 - p2
    low = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return low, high


@dataclass(frozen=True)
class Comparison:
    """Churn in an offered group against a group held back at random."""

    offered: int
    held_back: int
    churn_rate_offered: float
    churn_rate_held_back: float
    #: held back - offered: the churn the offers prevented, per customer offered
    reduction: float
    reduction_low: float
    reduction_high: float

    @classmethod
    def of(cls, offered: np.ndarray, held_back: np.ndarray) -> Comparison | None:
        """From each group's churned flags; None when a group is empty."""
        if not len(offered) or not len(held_back):
            return None
        x_off, x_held = int(offered.sum()), int(held_back.sum())
        low, high = newcombe(x_held, len(held_back), x_off, len(offered))
        return cls(
            offered=len(offered),
            held_back=len(held_back),
            churn_rate_offered=x_off / len(offered),
            churn_rate_held_back=x_held / len(held_back),
            reduction=x_held / len(held_back) - x_off / len(offered),
            reduction_low=low,
            reduction_high=high,
        )

    def interval(self, family: int) -> tuple[float, float]:
        """The reduction's interval as one of `family` judged together: Newcombe's at
        1 - 0.05 / `family` (Bonferroni), so that all of them hold together with 95%
        confidence. One 95% interval misses one time in twenty; a claim about every campaign
        at once ("each interval covers the truth") needs this one. `family=1` is the 95%
        interval above."""
        z = NormalDist().inv_cdf(1 - 0.025 / family)
        x_off = round(self.churn_rate_offered * self.offered)
        x_held = round(self.churn_rate_held_back * self.held_back)
        return newcombe(x_held, self.held_back, x_off, self.offered, z)

    @property
    def distinguishable(self) -> bool:
        """Whether the interval excludes no effect."""
        return self.reduction_low > 0 or self.reduction_high < 0


@dataclass(frozen=True)
class Protocol:
    """What the contact logs say the team did with a campaign, and the effect per protocol."""

    treated_contacted: int
    contact_rate: float
    #: share of contacted treated customers who accepted, among those with an answer
    acceptance_rate: float | None
    #: control customers contacted: against the protocol
    control_contacted: int
    #: contacted treated against control not contacted (not randomized: module docstring)
    per_protocol: Comparison | None
    #: the reduction by assignment per customer contacted (Bloom); None without contacts
    reduction_per_contact: float | None

    @classmethod
    def of(
        cls,
        contacts: pd.DataFrame,
        ids: pd.Series,
        left: np.ndarray,
        arm: np.ndarray,
        by_assignment: Comparison | None,
    ) -> Protocol:
        """From the campaign's recorded contacts (contacts.of_campaign), its assignments and
        their comparison by assignment (treatment against control)."""
        key = ids.astype(str).str.strip()
        contacted = (
            contacts["contacted"].astype(bool).reindex(key, fill_value=False).to_numpy(dtype=bool)
        )
        accepted = contacts["accepted"].reindex(key).to_numpy(dtype=object)
        treated, control = arm == Arm.treatment.value, arm == Arm.control.value
        reached = treated & contacted
        answered = reached & pd.notna(accepted)
        gap = reached.sum() / max(treated.sum(), 1) - (control & contacted).sum() / max(
            control.sum(), 1
        )
        return cls(
            treated_contacted=int(reached.sum()),
            contact_rate=float(reached.sum() / max(treated.sum(), 1)),
            acceptance_rate=(
                float(accepted[answered].astype(bool).sum() / answered.sum())
                if answered.any()
                else None
            ),
            control_contacted=int((control & contacted).sum()),
            per_protocol=Comparison.of(left[reached], left[control & ~contacted]),
            reduction_per_contact=(
                by_assignment.reduction / gap
                if by_assignment is not None and gap >= _MIN_CONTACT_GAP
                else None
            ),
        )


@dataclass(frozen=True)
class Effect:
    """One campaign judged with the outcomes known on some date."""

    campaign: Campaign
    days_observed: int
    window_complete: bool
    #: treatment against control, among the targets
    targets: Comparison | None
    #: explored against the untouched untargeted, below the threshold
    below_threshold: Comparison | None
    #: per probability decile of the targets (1: the lowest), treatment against control
    deciles: pd.DataFrame
    #: the Qini curve: share of targets (by probability) -> customers retained among its treated
    qini: pd.DataFrame
    qini_coefficient: float | None
    #: what the contact logs say, where one mentions the campaign
    protocol: Protocol | None = None
    #: whose policy these customers followed (a champion/challenger campaign is judged per
    #: policy, each against its own control group)
    policy: str = PolicyName.production.value

    def figures(self, offer_cost: float, saved_value: float) -> dict[str, float | int | str]:
        """The campaign's row of the effect table (a missing comparison: its figures absent)."""
        row: dict[str, float | int | str] = {
            "campaign": self.campaign.id,
            "policy": self.policy,
            "campaign_date": self.campaign.campaign_date,
            "model_version": self.campaign.versions.get(
                self.policy, ",".join(sorted(set(self.campaign.versions.values())))
            ),
            "days_observed": self.days_observed,
            "window_complete": self.window_complete,
        }
        if self.targets is not None:
            t = self.targets
            row |= {
                "treated": t.offered,
                "control": t.held_back,
                "churn_rate_treatment": t.churn_rate_offered,
                "churn_rate_control": t.churn_rate_held_back,
                "reduction": t.reduction,
                "reduction_low": t.reduction_low,
                "reduction_high": t.reduction_high,
                "retained_per_1000_offers": 1000 * t.reduction,
                "value_per_1000_offers": 1000 * (t.reduction * saved_value - offer_cost),
            }
        if self.below_threshold is not None:
            b = self.below_threshold
            row |= {
                "explored": b.offered,
                "churn_rate_explored": b.churn_rate_offered,
                "churn_rate_unexplored": b.churn_rate_held_back,
                "reduction_below_threshold": b.reduction,
            }
        if self.qini_coefficient is not None:
            row["qini_coefficient"] = self.qini_coefficient
        if self.protocol is not None:
            row |= _protocol_figures(self.protocol)
        return row


def _protocol_figures(protocol: Protocol) -> dict[str, float | int | str]:
    row: dict[str, float | int | str] = {
        "contacted": protocol.treated_contacted,
        "contact_rate": protocol.contact_rate,
        "control_contacted": protocol.control_contacted,
    }
    if protocol.acceptance_rate is not None:
        row["acceptance_rate"] = protocol.acceptance_rate
    if protocol.per_protocol is not None:
        pp = protocol.per_protocol
        row |= {
            "reduction_per_protocol": pp.reduction,
            "reduction_per_protocol_low": pp.reduction_low,
            "reduction_per_protocol_high": pp.reduction_high,
        }
    if protocol.reduction_per_contact is not None:
        row["reduction_per_contact"] = protocol.reduction_per_contact
    return row


def left_within(customers: pd.Series, churn_dates: pd.Series, start: date, end: date) -> np.ndarray:
    """Whether each customer's recorded churn date is after `start` and at most `end`."""
    later = churn_dates.reindex(customers.astype(str).str.strip()).fillna("").to_numpy()
    return (later != "") & (later > start.isoformat()) & (later <= end.isoformat())


def judge(
    campaign: Campaign,
    assignments: pd.DataFrame,
    churn_dates: pd.Series,
    outcomes_as_of: date,
    untouched: pd.Series | None = None,
    contacts: pd.DataFrame | None = None,
    policy: str = PolicyName.production.value,
) -> Effect | None:
    """The campaign's effect with the churns recorded by `outcomes_as_of`; None before any
    outcome can have arrived. `untouched`: the IDs of the scoring's untargeted customers the
    campaign assigned nothing (the comparison for the explored ones), when known; `contacts`:
    what the contact logs recorded of it (contacts.of_campaign), when any did."""
    start = date.fromisoformat(campaign.campaign_date)
    observed = min((outcomes_as_of - start).days, campaign.window_days)
    if observed <= 0:
        return None
    end = start + timedelta(days=observed)
    ids = assignments.iloc[:, 0]
    left = left_within(ids, churn_dates, start, end)
    arm = assignments["arm"].to_numpy()
    treated, control = arm == Arm.treatment.value, arm == Arm.control.value
    below = None
    if untouched is not None:
        explored = arm == Arm.explore.value
        below = Comparison.of(left[explored], left_within(untouched, churn_dates, start, end))
    targets = treated | control
    probability = assignments["churn_probability"].to_numpy()[targets]
    qini, coefficient = _qini(probability, treated[targets], left[targets])
    by_assignment = Comparison.of(left[treated], left[control])
    return Effect(
        campaign=campaign,
        days_observed=observed,
        window_complete=observed >= campaign.window_days,
        targets=by_assignment,
        below_threshold=below,
        deciles=_deciles(probability, treated[targets], left[targets]),
        qini=qini,
        qini_coefficient=coefficient,
        protocol=(
            None if contacts is None else Protocol.of(contacts, ids, left, arm, by_assignment)
        ),
        policy=policy,
    )


def _deciles(probability: np.ndarray, treated: np.ndarray, left: np.ndarray) -> pd.DataFrame:
    columns = ["decile", "low", "high", "treated", "control", "reduction"]
    if len(probability) < 10:
        return pd.DataFrame(columns=columns)
    order = np.argsort(np.argsort(probability, kind="stable"), kind="stable")
    decile = order * 10 // len(probability) + 1
    rows = []
    for d in range(1, 11):
        inside = decile == d
        compared = Comparison.of(left[inside & treated], left[inside & ~treated])
        rows.append(
            {
                "decile": d,
                "low": float(probability[inside].min()),
                "high": float(probability[inside].max()),
                "treated": int((inside & treated).sum()),
                "control": int((inside & ~treated).sum()),
                "reduction": None if compared is None else compared.reduction,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _qini(
    probability: np.ndarray, treated: np.ndarray, left: np.ndarray
) -> tuple[pd.DataFrame, float | None]:
    columns = ["share_targeted", "retained"]
    if not treated.any() or treated.all():
        return pd.DataFrame(columns=columns), None
    order = np.argsort(-probability, kind="stable")
    t, c, y = treated[order], ~treated[order], left[order]
    n_t, n_c = np.cumsum(t), np.cumsum(c)
    churned_t, churned_c = np.cumsum(y & t), np.cumsum(y & c)
    with np.errstate(divide="ignore", invalid="ignore"):
        retained = np.where(n_c > 0, churned_c * n_t / n_c, 0.0) - churned_t
    share = np.arange(1, len(order) + 1) / len(order)
    random = share * retained[-1]
    coefficient = float(np.mean(retained - random) / n_t[-1])
    curve = pd.DataFrame({"share_targeted": np.r_[0.0, share], "retained": np.r_[0.0, retained]})
    return curve, coefficient


@dataclass(frozen=True)
class PolicyValue:
    """What one policy of a champion/challenger campaign is worth per 1,000 customers given to
    it, were all its targets offered: targets/customers x (reduction x saved value - offer
    cost), with the standard error the reduction's carries into it (from its Newcombe
    interval)."""

    policy: str
    version: str
    threshold: float
    customers: int
    targets: int
    reduction: float
    value_per_1000: float
    standard_error: float


@dataclass(frozen=True)
class PolicyComparison:
    """Challenger against production on one campaign's customers, split at random."""

    campaign: str
    window_complete: bool
    production: PolicyValue
    challenger: PolicyValue
    #: challenger - production, per 1,000 customers, with a normal 95% interval
    difference: float
    difference_low: float
    difference_high: float

    @property
    def verdict(self) -> str:
        if self.difference_low > 0:
            return "challenger better"
        if self.difference_high < 0:
            return "production better"
        return "not distinguishable"

    def figures(self) -> dict[str, float | int | str | bool]:
        row: dict[str, float | int | str | bool] = {
            "campaign": self.campaign,
            "window_complete": self.window_complete,
        }
        for side in (self.production, self.challenger):
            row |= {
                f"{side.policy}_version": side.version,
                f"{side.policy}_threshold": side.threshold,
                f"{side.policy}_targets": side.targets,
                f"{side.policy}_value_per_1000": side.value_per_1000,
            }
        return row | {
            "difference_per_1000": self.difference,
            "difference_low": self.difference_low,
            "difference_high": self.difference_high,
            "verdict": self.verdict,
        }


def compare_policies(
    effects: list[Effect], offer_cost: float, saved_value: float
) -> list[PolicyComparison]:
    """Each champion/challenger campaign's two policies compared by value per customer (a
    policy whose targets lack a control group cannot be valued: that campaign is left out)."""
    by_campaign: dict[str, dict[str, Effect]] = {}
    for judged in effects:
        by_campaign.setdefault(judged.campaign.id, {})[judged.policy] = judged
    found = []
    for policies in by_campaign.values():
        if set(policies) != {PolicyName.production.value, PolicyName.challenger.value}:
            continue
        sides = [
            _policy_value(policies[name.value], offer_cost, saved_value)
            for name in (PolicyName.production, PolicyName.challenger)
        ]
        production, challenger = sides
        if production is None or challenger is None:
            continue
        difference = challenger.value_per_1000 - production.value_per_1000
        spread = _Z * math.hypot(challenger.standard_error, production.standard_error)
        judged = policies[PolicyName.production.value]
        found.append(
            PolicyComparison(
                judged.campaign.id,
                judged.window_complete,
                production,
                challenger,
                difference,
                difference - spread,
                difference + spread,
            )
        )
    return found


def _policy_value(judged: Effect, offer_cost: float, saved_value: float) -> PolicyValue | None:
    campaign, name = judged.campaign, judged.policy
    counts = campaign.by_policy.get(name, {})
    customers = counts.get("scored", 0)
    threshold = (
        campaign.challenger_policy["threshold"]
        if name == PolicyName.challenger.value
        else campaign.policy["threshold"]
    )
    t = judged.targets
    targets = counts.get(Arm.treatment.value, 0) + counts.get(Arm.control.value, 0)
    if not customers:
        return None
    if t is None:
        if targets:
            return None
        reduction, variance = 0.0, 0.0  # a policy that targets nobody is worth nothing
    else:
        # the standard error Newcombe's interval implies (its width over 2 x 1.96): the Wald
        # formula says 0 for a rate of 0 or 1, which small arms often have
        reduction = t.reduction
        variance = ((t.reduction_high - t.reduction_low) / (2 * _Z)) ** 2
    share = targets / customers
    return PolicyValue(
        policy=name,
        version=campaign.versions.get(name, ""),
        threshold=float(threshold),
        customers=customers,
        targets=targets,
        reduction=reduction,
        value_per_1000=1000 * share * (reduction * saved_value - offer_cost),
        standard_error=1000 * share * saved_value * math.sqrt(variance),
    )


@dataclass(frozen=True)
class Verdict:
    """What the offers_work check says of the campaigns measured so far."""

    passed: bool
    description: str
    closed: int
    #: treatment against control over every closed campaign's customers together
    pooled: Comparison | None


def offers_verdict(table: pd.DataFrame, min_campaigns: int) -> Verdict:
    """Warn on a closed campaign whose offers raised churn beyond doubt, or on closed campaigns
    (at least `min_campaigns`) whose pooled effect is still indistinguishable from none."""
    if table.empty or "reduction" not in table:
        return Verdict(True, "no campaign has outcomes yet: offers not judged", 0, None)
    closed = table.loc[table["window_complete"].astype(bool) & table["reduction"].notna()]
    if closed.empty:
        return Verdict(
            True,
            "no campaign with a control group has closed its window yet: offers not judged",
            0,
            None,
        )
    harmful = closed.loc[closed["reduction_high"] < 0]
    treated, control = closed["treated"].astype(int), closed["control"].astype(int)
    churned_t = (closed["churn_rate_treatment"] * treated).round().astype(int)
    churned_c = (closed["churn_rate_control"] * control).round().astype(int)
    pooled = Comparison.of(
        np.arange(int(treated.sum())) < int(churned_t.sum()),
        np.arange(int(control.sum())) < int(churned_c.sum()),
    )
    shown = (
        f"pooled over {len(closed)} closed campaign(s): churn reduction per offer "
        f"{pooled.reduction:+.3f} [{pooled.reduction_low:+.3f}, {pooled.reduction_high:+.3f}]"
        if pooled is not None
        else f"{len(closed)} closed campaign(s)"
    )
    if not harmful.empty:
        worst = harmful.loc[harmful["reduction_high"].astype(float).idxmin()]
        return Verdict(
            False,
            f"offers pushed customers out in campaign {worst['campaign']}: churn "
            f"{-float(worst['reduction']):+.3f} per offer, 95% interval "
            f"[{-float(worst['reduction_high']):+.3f}, {-float(worst['reduction_low']):+.3f}]; "
            + shown,
            len(closed),
            pooled,
        )
    if pooled is not None and pooled.reduction_high < 0:
        return Verdict(
            False,
            f"offers pushed customers out over the closed campaigns: {shown}",
            len(closed),
            pooled,
        )
    if len(closed) >= min_campaigns and (pooled is None or not pooled.distinguishable):
        return Verdict(
            False,
            f"after {len(closed)} closed campaigns the offers' effect is not distinguishable "
            f"from none; {shown}",
            len(closed),
            pooled,
        )
    return Verdict(True, shown, len(closed), pooled)

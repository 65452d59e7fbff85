"""The decision threshold that pays: who to make a retention offer to, given what it costs.

Making an offer to a customer costs `offer_cost` whether or not they would have left; making
it to a customer who would have left is worth `saved_value` (the value of a saved customer,
with the offer's success rate folded in). Targeting everyone at or above threshold t is worth

    value(t) = saved_value * (churners targeted) - offer_cost * (customers targeted)

on the holdout. The threshold that maximises it is written on the model version, so the API
and the scores file use it without anyone copying a number by hand. With calibrated
probabilities the optimum sits near offer_cost / saved_value, the break-even probability; the
holdout search finds it for the model as it really is.

That formula assumes what an offer does. Once campaigns have measured it (`OfferEffect`: the
churn an offer prevents, by probability band, from closed campaigns' randomized groups), an
offer to a customer with probability p is worth saved_value * reduction(p) - offer_cost,
whoever leaves: what pays is the churn an offer changes, not the churn it meets. The version
records which it used (tag `decision_effect`: `assumed`, or `measured on campaigns ...`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from churn_assets.ml.evaluation.metrics import DECISION_THRESHOLD

#: Thresholds searched: every percent. A finer grid only fits the holdout's noise.
GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)
THRESHOLD_TAG = "decision_threshold"
OFFER_COST_TAG = "decision_offer_cost"
SAVED_VALUE_TAG = "decision_saved_value"
EFFECT_TAG = "decision_effect"
ASSUMED = "assumed"


@dataclass(frozen=True)
class Economics:
    offer_cost: float
    saved_value: float

    @property
    def break_even(self) -> float:
        """The probability at which an offer pays for itself on average."""
        return self.offer_cost / self.saved_value


@dataclass(frozen=True)
class OfferEffect:
    """The churn an offer prevents, by band of churn probability, as campaigns measured it."""

    #: which campaigns, in words: "measured on campaigns 2026-10-09-v1, ..."
    source: str
    #: each band's lowest probability, ascending, the first 0
    lower: np.ndarray
    #: each band's churn reduction per offer (control - treatment churn rate)
    reduction: np.ndarray

    def at(self, probability: np.ndarray) -> np.ndarray:
        band = np.searchsorted(self.lower, np.asarray(probability), side="right") - 1
        return self.reduction[np.clip(band, 0, len(self.reduction) - 1)]


@dataclass(frozen=True)
class ValueCurve:
    """Expected value on the holdout for each threshold of `GRID`, and the best one."""

    economics: Economics
    thresholds: np.ndarray
    values: np.ndarray
    targeted: np.ndarray
    customers: int
    value_target_all: float
    #: what an offer was taken to do: ASSUMED, or the measured effect's source
    effect: str = ASSUMED

    @property
    def best_index(self) -> int:
        # Ties go to the highest threshold: the same value for fewer offers.
        return int(len(self.values) - 1 - np.argmax(self.values[::-1]))

    @property
    def threshold(self) -> float:
        return float(self.thresholds[self.best_index])

    @property
    def best_value(self) -> float:
        return float(self.values[self.best_index])

    @property
    def best_targeted(self) -> int:
        return int(self.targeted[self.best_index])

    def summary(self) -> dict[str, float]:
        per_thousand = 1000 / max(self.customers, 1)
        return {
            "decision_threshold": self.threshold,
            "expected_value": self.best_value,
            "expected_value_per_1000_customers": self.best_value * per_thousand,
            "targeted_share": self.best_targeted / max(self.customers, 1),
            "expected_value_target_all": self.value_target_all,
            "expected_value_target_all_per_1000_customers": self.value_target_all * per_thousand,
            "break_even_probability": self.economics.break_even,
        }

    def version_tags(self) -> dict[str, str]:
        return {
            THRESHOLD_TAG: f"{self.threshold:.2f}",
            OFFER_COST_TAG: f"{self.economics.offer_cost:g}",
            SAVED_VALUE_TAG: f"{self.economics.saved_value:g}",
            EFFECT_TAG: self.effect,
        }


def value_curve(
    y_true: np.ndarray,
    probability: np.ndarray,
    economics: Economics,
    effect: OfferEffect | None = None,
) -> ValueCurve:
    """Value of targeting customers at or above each threshold, in one pass over sorted scores:
    each offer worth saved_value for a churner (assumed), or saved_value times the measured
    reduction at its probability (`effect`), less offer_cost."""
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(probability, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    # customers with p >= t, for each t of the grid: p sorted descending, so a binary search
    targeted = np.searchsorted(-p[order], -GRID, side="right")
    if effect is None:  # in whole churners, so equal values tie exactly (the higher t wins)
        churners = np.concatenate([[0], np.cumsum(y[order])])
        values = economics.saved_value * churners[targeted] - economics.offer_cost * targeted
        value_all = economics.saved_value * int(y.sum()) - economics.offer_cost * len(y)
    else:
        gains = economics.saved_value * effect.at(p[order]) - economics.offer_cost
        from_top = np.concatenate([[0.0], np.cumsum(gains)])
        values, value_all = from_top[targeted], from_top[-1]
    return ValueCurve(
        economics,
        GRID,
        np.asarray(values, dtype=np.float64),
        targeted,
        len(y),
        float(value_all),
        ASSUMED if effect is None else effect.source,
    )


def threshold_from_tags(tags: dict[str, str]) -> float | None:
    """The version's own threshold; None for versions evaluated before thresholds existed."""
    value = tags.get(THRESHOLD_TAG)
    return None if value is None else float(value)


def version_economics(tags: dict[str, str], default: Economics) -> Economics:
    """The costs a version's threshold was chosen with; the settings' for older versions."""
    if OFFER_COST_TAG not in tags or SAVED_VALUE_TAG not in tags:
        return default
    return Economics(float(tags[OFFER_COST_TAG]), float(tags[SAVED_VALUE_TAG]))


def version_threshold(tags: dict[str, str]) -> float:
    """The threshold to act on for a version: its own, else the plain 0.5."""
    tagged = threshold_from_tags(tags)
    return DECISION_THRESHOLD if tagged is None else tagged

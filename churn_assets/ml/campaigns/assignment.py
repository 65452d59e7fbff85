"""Who in a scoring gets an offer: the policy's targets split at random into treatment and a
control group held back, plus a small exploration slice below the threshold.

The split is a seeded hash, not a random generator: each customer's draw is the first 8 bytes
of SHA-256 of "<campaign ID>:<customer ID>" read as a fraction of 2^64, so anyone can recompute
any assignment from the two IDs alone (an auditor, the CRM, a later run), it does not depend on
the order or the number of customers scored, and a rerun of the same campaign assigns the same
arms. One draw per customer serves both splits: a target is in control when its draw is below
the control fraction; a customer below the threshold is explored when its draw is below the
exploration fraction.

A champion/challenger campaign first splits the scoring between two policies (production's
and a challenger's: another version, another threshold, or both) by a second draw, SHA-256 of
"<campaign ID>/policy:<customer ID>", independent of the first: below the challenger's share the
customer's targeting, control group and exploration follow the challenger's scores and
threshold, else production's. Each policy thus has its own random control group, and the two
halves are alike but for the policy, so their outcomes compare the policies themselves.

Exploration costs offers to customers the model would not target (the exploration fraction of
the untargeted base, at `offer_cost` each, most of them to customers who would have stayed);
what it buys is outcomes with and without an offer across the whole score range, which an
uplift model needs and which the targets alone never give.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

_SCALE = float(2**64)


class Arm(enum.StrEnum):
    """What a campaign did with a customer it assigned."""

    #: targeted by the policy, offered
    treatment = "treatment"
    #: targeted by the policy, held back at random to measure the offer
    control = "control"
    #: below the threshold, offered at random to learn the offer's effect there
    explore = "explore"
    #: in a campaign whose window is still open (its arm there stands): neither offered again
    #: nor explored until it closes, and no comparison's member here
    held = "held"

    @property
    def offered(self) -> bool:
        return self in (Arm.treatment, Arm.explore)


@dataclass(frozen=True)
class Policy:
    """How a campaign turns scores into offers."""

    threshold: float
    control_fraction: float
    explore_fraction: float

    def __post_init__(self) -> None:
        for name in ("control_fraction", "explore_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")


def draws(campaign: str, customers: pd.Series) -> np.ndarray:
    """Each customer's uniform draw in [0, 1) for `campaign` (see the module docstring)."""
    prefix = f"{campaign}:".encode()
    values = [
        int.from_bytes(hashlib.sha256(prefix + str(c).encode()).digest()[:8], "big")
        for c in customers
    ]
    return np.asarray(values, dtype=np.float64) / _SCALE


class PolicyName(enum.StrEnum):
    """Whose policy a customer of a campaign was given."""

    production = "production"
    challenger = "challenger"


def challenged(campaign: str, customers: pd.Series, share: float) -> np.ndarray:
    """Whether each customer's policy is the challenger's (see the module docstring)."""
    return draws(f"{campaign}/policy", customers) < share


def assign(
    campaign: str,
    customers: pd.Series,
    targeted: np.ndarray,
    policy: Policy,
    running: frozenset[str] = frozenset(),
) -> pd.Series:
    """Each customer's arm (None: untargeted and not explored). `targeted` says whom the policy
    targets; `running` are customers in a campaign whose window is still open: held."""
    u = draws(campaign, customers)
    busy = customers.astype(str).isin(running).to_numpy()
    arms = np.full(len(customers), None, dtype=object)
    arms[targeted & (u < policy.control_fraction)] = Arm.control.value
    arms[targeted & (u >= policy.control_fraction)] = Arm.treatment.value
    arms[~targeted & (u < policy.explore_fraction)] = Arm.explore.value
    arms[busy] = Arm.held.value
    return pd.Series(arms, index=customers.index, name="arm")

"""Data drift: how far incoming customers are from the customers a model was trained on.

Training stores a compact profile of its rows (decile bins of each numeric feature, level
shares of each categorical one) next to the model, so drift can be measured later against the
production model without its training data. Per feature, the population stability index
(PSI = sum over bins of (actual - expected) * ln(actual / expected)) reads by the usual rule of
thumb: below 0.1 stable, 0.1 to 0.2 a moderate shift, above 0.2 a shift worth a look. A level
the training rows never had (a share of rows the model has no experience with) is reported
separately, as is whether either passes its warning threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from churn_assets.ml import schema

#: Shares are floored here so an empty bin does not make the logarithm infinite.
_SHARE_FLOOR = 1e-4
_DECILES = np.linspace(0.1, 0.9, 9)

PROFILE_ARTIFACT = "training/profile.json"


@dataclass(frozen=True)
class FeatureProfile:
    """One feature's distribution: bin edges and shares (numeric) or level shares."""

    kind: Literal["numeric", "categorical"]
    shares: dict[str, float]
    edges: list[float]


def _bins(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bin i holds edges[i-1] < value <= edges[i]; the outer bins are open-ended."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")


def _numeric_shares(values: np.ndarray, edges: list[float]) -> dict[str, float]:
    counts = np.bincount(_bins(values, edges), minlength=len(edges) + 1)
    return {str(i): float(c) / max(len(values), 1) for i, c in enumerate(counts)}


def _level_shares(values: pd.Series) -> dict[str, float]:
    shares = values.astype(str).value_counts(normalize=True)
    return {str(level): float(share) for level, share in shares.items()}


def profile_features(frame: pd.DataFrame) -> dict[str, Any]:
    """The training rows' profile, as a JSON-ready dict (logged with the model)."""
    features: dict[str, dict[str, Any]] = {}
    for column in schema.FEATURE_COLUMNS:
        if column in schema.CATEGORICAL_LEVELS:
            profile = FeatureProfile("categorical", _level_shares(frame[column]), [])
        else:
            values = frame[column].to_numpy(dtype=np.float64)
            edges = sorted({float(e) for e in np.quantile(values, _DECILES)})
            profile = FeatureProfile("numeric", _numeric_shares(values, edges), edges)
        features[column] = asdict(profile)
    return {"rows": len(frame), "features": features}


def _psi(expected: dict[str, float], actual: dict[str, float]) -> float:
    keys = expected.keys() | actual.keys()
    e = np.maximum([expected.get(k, 0.0) for k in keys], _SHARE_FLOOR)
    a = np.maximum([actual.get(k, 0.0) for k in keys], _SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str
    psi: float
    unseen_share: float
    unseen_levels: list[str]
    warn: bool


@dataclass(frozen=True)
class DriftReport:
    rows: int
    training_rows: int
    psi_warn: float
    unseen_warn: float
    features: list[FeatureDrift]

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.warn]

    def summary(self) -> str:
        if not self.drifted:
            return (
                f"no feature drifted: every PSI < {self.psi_warn} and unseen levels < "
                f"{self.unseen_warn:.1%} across {self.rows} customers"
            )
        worst = ", ".join(
            f"{f.feature} (PSI {f.psi:.3f}, unseen {f.unseen_share:.1%})" for f in self.drifted
        )
        return f"{len(self.drifted)} feature(s) drifted from the training data: {worst}"


def compare(
    profile: dict[str, Any], frame: pd.DataFrame, psi_warn: float, unseen_warn: float
) -> DriftReport:
    """Each feature of `frame` against the training profile, most drifted first."""
    results = []
    for column, stored in profile["features"].items():
        expected = FeatureProfile(**stored)
        if expected.kind == "categorical":
            actual = _level_shares(frame[column])
            unseen = sorted(level for level in actual if level not in expected.shares)
            unseen_share = float(sum(actual[level] for level in unseen))
        else:
            actual = _numeric_shares(frame[column].to_numpy(dtype=np.float64), expected.edges)
            unseen, unseen_share = [], 0.0
        psi = _psi(expected.shares, actual)
        warn = psi >= psi_warn or (bool(unseen) and unseen_share >= unseen_warn)
        results.append(FeatureDrift(column, expected.kind, psi, unseen_share, unseen, warn))
    results.sort(key=lambda f: (not f.warn, -f.psi))
    return DriftReport(len(frame), int(profile["rows"]), psi_warn, unseen_warn, results)

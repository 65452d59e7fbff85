"""Data drift: how far incoming customers are from the customers a model was trained on.

Training stores a compact profile of its rows (decile bins of each numeric feature, level
shares of each categorical one) next to the model, so drift can be measured later against the
production model without its training data. Per feature, the population stability index
(PSI = sum over bins of (actual - expected) * ln(actual / expected)) reads by the usual rule of
thumb: below 0.1 stable, 0.1 to 0.2 a moderate shift, above 0.2 a shift worth a look. A level
the training rows never had (a share of rows the model has no experience with) is reported
separately, as is whether either passes its warning threshold.

Like is compared with like: the profile is of the *active* customers among the training rows
(Churn = No), and an extract is measured on its active customers. Extracts are mostly the
active base; comparing them with all training rows, churners included, reads the churners'
short tenure and monthly contracts as drift (PSI 0.06-0.08 on data that did not move at all).

PSI from a handful of rows is noise (3 customers once read as "PSI 6.9, 17 features drifted"),
so a feature is judged only when the compared customers fill its bins with at least
`min_rows_per_bin` rows on average (CHURN_DRIFT_MIN_ROWS_PER_BIN, 20): 220 customers for a
numeric feature's 11 bins, 40 to 80 for a categorical feature's 2 to 4 levels. Below that the
feature reads "too few rows to judge", never drifted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any, Literal

import numpy as np
import pandas as pd

from churn_assets.ml.data.contract import Contract

#: Shares are floored here so an empty bin does not make the logarithm infinite.
_SHARE_FLOOR = 1e-4
_DECILES = np.linspace(0.1, 0.9, 9)
#: The bin of numbers the contract keeps missing (`blank: missing`).
MISSING_BIN = "missing"

PROFILE_ARTIFACT = "training/profile.json"
#: Rows per bin, on average, below which a feature's PSI is not judged.
MIN_ROWS_PER_BIN = 20
#: What both sides are cut down to before they are compared.
POPULATION = "active customers (not churned)"


def active(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The customers still with us: drift compares these on both sides."""
    return frame.loc[frame[contract.target_column] == 0]


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
    """Shares of each bin; numbers the contract keeps missing are a bin of their own."""
    missing = np.isnan(values)
    counts = np.bincount(_bins(values[~missing], edges), minlength=len(edges) + 1)
    shares = {str(i): float(c) / max(len(values), 1) for i, c in enumerate(counts)}
    if missing.any():
        shares[MISSING_BIN] = float(missing.sum()) / len(values)
    return shares


def _level_shares(values: pd.Series) -> dict[str, float]:
    shares = values.astype(str).value_counts(normalize=True)
    return {str(level): float(share) for level, share in shares.items()}


def profile_features(training: pd.DataFrame, contract: Contract) -> dict[str, Any]:
    """The profile of the training rows' active customers, JSON-ready (logged with the model)."""
    frame = active(training, contract)
    features: dict[str, dict[str, Any]] = {}
    for column in contract.feature_columns:
        if not contract.features[column].numeric:
            profile = FeatureProfile("categorical", _level_shares(frame[column]), [])
        else:
            values = frame[column].to_numpy(dtype=np.float64)
            present = values[~np.isnan(values)]
            quantiles = np.quantile(present, _DECILES) if len(present) else []
            edges = sorted({float(e) for e in quantiles})
            profile = FeatureProfile("numeric", _numeric_shares(values, edges), edges)
        features[column] = asdict(profile)
    return {"rows": len(frame), "population": POPULATION, "features": features}


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
    #: Whether there were enough rows to judge this feature (see MIN_ROWS_PER_BIN).
    judged: bool = True


@dataclass(frozen=True)
class DriftReport:
    rows: int
    training_rows: int
    psi_warn: float
    unseen_warn: float
    features: list[FeatureDrift]
    extract_rows: int = 0
    min_rows_per_bin: int = MIN_ROWS_PER_BIN

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.warn]

    @property
    def judged(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.judged]

    @property
    def max_psi(self) -> float | None:
        """The largest PSI among the judged features; None when none could be judged."""
        return max((f.psi for f in self.judged), default=None)

    def summary(self) -> str:
        if not self.judged:
            return (
                f"too few rows to judge: {self.rows} {POPULATION} of {self.extract_rows} in the "
                f"extract, {self.min_rows_per_bin} per bin needed (at least "
                f"{self.min_rows_per_bin * 2} for a two-level feature)"
            )
        unjudged = len(self.features) - len(self.judged)
        skipped = f"; {unjudged} feature(s) had too few rows to judge" if unjudged else ""
        if not self.drifted:
            return (
                f"no feature drifted: every PSI < {self.psi_warn} and unseen levels < "
                f"{self.unseen_warn:.1%} across {self.rows} {POPULATION}{skipped}"
            )
        worst = ", ".join(
            f"{f.feature} (PSI {f.psi:.3f}, unseen {f.unseen_share:.1%})" for f in self.drifted
        )
        return (
            f"{len(self.drifted)} feature(s) drifted from the training data: {worst} "
            f"({self.rows} {POPULATION}{skipped})"
        )


def compare(
    profile: dict[str, Any],
    extract: pd.DataFrame,
    contract: Contract,
    psi_warn: float,
    unseen_warn: float,
    min_rows_per_bin: int = MIN_ROWS_PER_BIN,
) -> DriftReport:
    """Each feature of the extract's active customers against the profile, most drifted first.

    A profile from before profiles were of active customers only is compared as it is; a
    feature the extract's contract no longer has is not compared.
    """
    frame = active(extract, contract)
    results = []
    for column, stored in profile["features"].items():
        if column not in frame.columns:
            continue
        expected = FeatureProfile(**stored)
        if expected.kind == "categorical":
            actual = _level_shares(frame[column])
            unseen = sorted(level for level in actual if level not in expected.shares)
            unseen_share = float(sum(actual[level] for level in unseen))
        else:
            actual = _numeric_shares(frame[column].to_numpy(dtype=np.float64), expected.edges)
            unseen, unseen_share = [], 0.0
        psi = _psi(expected.shares, actual)
        bins = max(len(expected.shares), 2)
        judged = len(frame) >= min_rows_per_bin * bins
        warn = judged and (psi >= psi_warn or (bool(unseen) and unseen_share >= unseen_warn))
        results.append(FeatureDrift(column, expected.kind, psi, unseen_share, unseen, warn, judged))
    results.sort(key=lambda f: (not f.warn, not f.judged, -f.psi))
    return DriftReport(
        len(frame),
        int(profile["rows"]),
        psi_warn,
        unseen_warn,
        results,
        extract_rows=len(extract),
        min_rows_per_bin=min_rows_per_bin,
    )


#: The latest drift check, beside the scores (`files.keep_json`): the console's overview.
KEPT = PurePath("drift") / "latest.json"


def kept_record(
    report: DriftReport | None, version: str | None, why: str, snapshot: str | None = None
) -> dict[str, object]:
    """What the console shows of the latest check: when, on which snapshot (the extract
    merged into it), against which version, the summary, and the drifted features with their
    PSI (no report: why drift was not measured)."""
    return {
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "snapshot": snapshot,
        "production_version": version,
        "summary": why if report is None else report.summary(),
        "drifted": []
        if report is None
        else [
            {"feature": f.feature, "psi": round(f.psi, 4), "unseen_share": round(f.unseen_share, 4)}
            for f in report.drifted
        ],
        "max_psi": None if report is None or report.max_psi is None else round(report.max_psi, 4),
        "measured": report is not None,
    }

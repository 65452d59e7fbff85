"""Data-quality rules for cleaned customers, independent of how they are reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from churn_assets.ml.contract import MISSING, Contract

#: Churn rates outside this band point at a broken extract (wrong file, filtered rows),
#: not at a change in customers: the public data sits at 26.5%.
PLAUSIBLE_CHURN_RATE = (0.05, 0.60)


@dataclass(frozen=True)
class QualityResult:
    """One rule's verdict with the figures that justify it."""

    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def required_columns(frame: pd.DataFrame, contract: Contract) -> QualityResult:
    """Blocks training when a feature column, the ID or the target is missing."""
    expected = list(contract.columns)
    missing = [c for c in expected if c not in frame.columns]
    return QualityResult(
        "required_columns",
        not missing,
        "Every feature column, the ID and the target are present.",
        {"missing": ", ".join(missing) or "none", "columns": len(frame.columns)},
    )


def binary_target(frame: pd.DataFrame, contract: Contract) -> QualityResult:
    """Blocks training unless the target holds both classes, 0 and 1, and nothing else."""
    values = sorted(frame[contract.target_column].unique().tolist())
    return QualityResult(
        "binary_target",
        values == [0, 1],
        "The target holds exactly the classes 0 and 1.",
        {"classes": str(values)},
    )


def churn_rate_plausible(frame: pd.DataFrame, contract: Contract) -> QualityResult:
    """Blocks training when the churn rate is implausible, a sign of a broken export."""
    rate = float(frame[contract.target_column].mean())
    low, high = PLAUSIBLE_CHURN_RATE
    return QualityResult(
        "churn_rate_plausible",
        low <= rate <= high,
        f"The churn rate lies in [{low:.0%}, {high:.0%}].",
        {"churn_rate": rate, "min": low, "max": high},
    )


def no_null_features(frame: pd.DataFrame, contract: Contract) -> QualityResult:
    """Blocks training when a feature still has missing values after cleaning."""
    # numbers the contract keeps missing (`blank: missing`) may be; nothing else may
    kept = [c for c, s in contract.features.items() if s.blank != MISSING]
    nulls = frame[kept].isna().sum()
    offending = {c: int(n) for c, n in nulls.items() if n}
    return QualityResult(
        "no_null_features",
        not offending,
        "No feature has a missing value after cleaning.",
        {"null_counts": str(offending or "none")},
    )


def numeric_ranges(frame: pd.DataFrame, contract: Contract) -> QualityResult:
    """Blocks training when a numeric feature leaves its plausible range."""
    out_of_range: dict[str, int] = {}
    observed: dict[str, str] = {}
    for column in contract.numeric_features:
        low, high = contract.numeric_range(column)
        values = frame[column]
        out_of_range[column] = int(((values < low) | (values > high)).sum())
        observed[column] = f"{values.min()} .. {values.max()} (allowed {low} .. {high})"
    return QualityResult(
        "numeric_ranges",
        not any(out_of_range.values()),
        "Numeric features stay within their plausible ranges.",
        {**observed, "rows_out_of_range": sum(out_of_range.values())},
    )


RULES = (required_columns, binary_target, churn_rate_plausible, no_null_features, numeric_ranges)


def evaluate_rules(frame: pd.DataFrame, contract: Contract) -> list[QualityResult]:
    return [rule(frame, contract) for rule in RULES]

"""Reasons: why one customer scores as they do, from LightGBM's exact feature contributions.

LightGBM's `pred_contrib` splits each raw score (log-odds) into one contribution per feature
plus the base value, exactly (TreeSHAP on the model's own trees, no sampling): they sum to the
raw score. A reason names the raw export's column and this customer's value in the export's
terms, with the contribution in log-odds, e.g. "Contract = Month-to-month: +0.21"; positive
pushes towards churn. The calibration map is monotone, so it never reorders reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: Most reasons a caller can ask for per customer: one per feature.
MAX_REASONS = 19


@dataclass(frozen=True)
class Explainer:
    """The booster and the column each of its features comes from, in matrix order."""

    booster: Any
    columns: Sequence[str]

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> Explainer:
        names = [str(c) for c in pipeline.named_steps["preprocess"].get_feature_names_out()]
        return cls(pipeline.named_steps["model"].booster_, names)

    def contributions(self, matrix: np.ndarray, threads: int = 0) -> np.ndarray:
        """(customers, features + 1) log-odds contributions; the last column is the base value."""
        return np.asarray(
            self.booster.predict(matrix, pred_contrib=True, num_threads=threads), dtype=np.float64
        )

    def top(
        self, matrix: np.ndarray, values: Sequence[Any], count: int, threads: int = 0
    ) -> list[list[dict[str, Any]]]:
        """Each customer's `count` largest contributions by size, as JSON-ready dicts.

        `values[j]` holds column j's values (matrix order) as the export wrote them.
        """
        contributions = self.contributions(matrix, threads)[:, :-1]
        count = min(count, contributions.shape[1])
        chosen = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :count]
        picked = np.take_along_axis(contributions, chosen, axis=1)
        return [
            [
                _reason(self.columns[j], values[j][row], float(c))
                for j, c in zip(chosen[row], picked[row], strict=True)
            ]
            for row in range(len(chosen))
        ]


def _text(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:g}"
    return str(value)


def _reason(column: str, value: Any, contribution: float) -> dict[str, Any]:
    shown = _text(value)
    return {
        "feature": column,
        "value": shown,
        "contribution": contribution,
        "text": f"{column} = {shown}: {contribution:+.2f}",
    }


def frame_reasons(pipeline: Any, features: pd.DataFrame, count: int) -> list[list[dict[str, Any]]]:
    """Reasons for a frame of cleaned customers, through the logged pipeline's preprocessor."""
    explainer = Explainer.from_pipeline(pipeline)
    matrix = pipeline.named_steps["preprocess"].transform(features)
    values = [features[column].to_numpy() for column in explainer.columns]
    return explainer.top(np.asarray(matrix, dtype=np.float64), values, count)

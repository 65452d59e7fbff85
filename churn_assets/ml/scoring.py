"""Batch scoring: every active customer ranked by churn probability for the retention team.

Customers whose Churn is already "Yes" have left, so only the active base is scored. The file
is ranked, most at risk first, and carries the columns a campaign is planned with: contract,
tenure band and payment method, which are also the dimensions of the risk segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv

from churn_assets.ml import schema
from churn_assets.ml.files import replacing

SCORES_FILE = "churn_scores"
TENURE_BANDS = ("0-12 months", "13-24 months", "25-48 months", "49-72 months", "73+ months")
_TENURE_EDGES = (-1, 12, 24, 48, 72, np.inf)
SEGMENT_COLUMNS = ("Contract", "tenure_band", "PaymentMethod")
#: Segments smaller than this share of the base are left out of the top list: a segment of
#: three customers with one high score is noise, not a campaign.
_MIN_SEGMENT_SHARE = 0.005
_MIN_SEGMENT_CUSTOMERS = 20


def tenure_band(tenure: pd.Series) -> pd.Series:
    return pd.cut(tenure, bins=list(_TENURE_EDGES), labels=list(TENURE_BANDS))


def active_customers(customers: pd.DataFrame) -> pd.DataFrame:
    return customers.loc[customers[schema.TARGET_COLUMN] == 0]


def rank_customers(
    active: pd.DataFrame,
    probability: np.ndarray,
    model_version: str,
    threshold: float,
    reasons: list[list[dict[str, Any]]] | None = None,
) -> pd.DataFrame:
    """Active customers with their churn probability, most at risk first (rank 1).

    `offer` marks customers at or above the version's decision threshold, the ones a
    retention offer pays for; `reason_1`... hold each customer's top reasons when asked for.
    """
    p = np.asarray(probability, dtype=np.float64)
    scores = pd.DataFrame(
        {
            schema.ID_COLUMN: active[schema.ID_COLUMN].to_numpy(),
            "churn_probability": p,
            "offer": p >= threshold,
            "Contract": active["Contract"].to_numpy(),
            "tenure_band": tenure_band(active["tenure"]).to_numpy(),
            "PaymentMethod": active["PaymentMethod"].to_numpy(),
            "tenure": active["tenure"].to_numpy(),
            "MonthlyCharges": active["MonthlyCharges"].to_numpy(),
        }
    )
    if reasons:
        for i in range(len(reasons[0])):
            scores[f"reason_{i + 1}"] = [customer[i]["text"] for customer in reasons]
    # A stable sort on the probability alone: ties keep the snapshot's order, and sorting on
    # the ID as well costs seconds per million customers (string comparisons).
    order = np.argsort(-scores["churn_probability"].to_numpy(), kind="stable")
    scores = scores.take(order).reset_index(drop=True)
    scores.insert(0, "rank", np.arange(1, len(scores) + 1, dtype=np.int64))
    scores["model_version"] = model_version
    return scores


def top_segments(scores: pd.DataFrame, limit: int = 10) -> pd.DataFrame:
    """Contract x tenure band x payment method segments with the highest mean probability.

    `expected_churners` (the sum of probabilities) says how many customers a campaign on the
    segment could keep, which is what sizes it.
    """
    grouped = scores.groupby(list(SEGMENT_COLUMNS), observed=True)["churn_probability"]
    segments = grouped.agg(
        customers="size", mean_probability="mean", expected_churners="sum"
    ).reset_index()
    floor = max(_MIN_SEGMENT_CUSTOMERS, int(_MIN_SEGMENT_SHARE * len(scores)))
    large = segments.loc[segments["customers"] >= min(floor, len(scores))]
    return (
        large.sort_values(["mean_probability", "customers"], ascending=[False, False])
        .head(limit)
        .reset_index(drop=True)
    )


@dataclass(frozen=True)
class ScoreFiles:
    parquet: Path
    csv: Path


def write_scores(scores: pd.DataFrame, folder: Path) -> ScoreFiles:
    """Parquet for pipelines, CSV for people; each replaced in one rename."""
    files = ScoreFiles(folder / f"{SCORES_FILE}.parquet", folder / f"{SCORES_FILE}.csv")
    with replacing(files.parquet) as temporary:
        scores.to_parquet(temporary, index=False)
    with replacing(files.csv) as temporary:
        # pyarrow writes CSV an order of magnitude faster than pandas' float formatting; no
        # value here needs quotes (levels and reasons hold no commas), and one that did would
        # raise rather than corrupt the file.
        csv_table = pa.Table.from_pandas(
            scores.assign(churn_probability=scores["churn_probability"].round(6)),
            preserve_index=False,
        )
        options = pyarrow.csv.WriteOptions(quoting_style="none")
        pyarrow.csv.write_csv(csv_table, temporary, options)
    return files

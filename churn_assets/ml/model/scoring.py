"""Batch scoring: every active customer ranked by churn probability for the retention team.

Customers the export already marks as churned have left, so only the active base is scored.
The file is ranked, most at risk first, and carries the columns a campaign is planned with:
the contract's `segments` (a number as its band, e.g. tenure_band), which are also the
dimensions of the risk segments, and its `carry` columns.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.csv
import pyarrow.parquet

from churn_assets.ml.data.contract import Contract
from churn_assets.ml.files import replacing
from churn_assets.ml.model import ranking

SCORES_FILE = "churn_scores"
#: The scores' column naming the uplift model that chose the offers, when one did.
UPLIFT_VERSION = "uplift_version"
#: Segments smaller than this share of the base are left out of the top list: a segment of
#: three customers with one high score is noise, not a campaign.
_MIN_SEGMENT_SHARE = 0.005
_MIN_SEGMENT_CUSTOMERS = 20


def band_column(column: str) -> str:
    return f"{column}_band"


def segment_columns(contract: Contract) -> list[str]:
    """The scores' segment columns: a category as it is, a number as its band."""
    return [band_column(c) if contract.features[c].numeric else c for c in contract.segments]


def band(values: pd.Series, contract: Contract, column: str) -> pd.Series:
    """Each value's band: edges from the contract, labels such as "13-24 months"."""
    edges = [-np.inf, *(contract.features[column].bands or ()), np.inf]
    return pd.cut(values, bins=edges, labels=contract.band_labels(column))


def active_customers(customers: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    return customers.loc[customers[contract.target_column] == 0]


@dataclass(frozen=True)
class UpliftColumns:
    """An uplift model's figures for the customers scored: the version, each customer's
    uplift and expected incremental value (see ml/campaigns/learner)."""

    version: str
    uplift: np.ndarray
    value: np.ndarray


def score_columns(
    active: pd.DataFrame,
    contract: Contract,
    probability: np.ndarray,
    threshold: float,
    reasons: list[list[dict[str, Any]]] | None = None,
    uplift: UpliftColumns | None = None,
) -> pd.DataFrame:
    """Active customers with their churn probability and the columns a campaign plans with,
    unranked: what each partition of a large base gives, and `rank` orders together.

    `offer` marks the customers a retention offer pays for: at or above the version's
    decision threshold; with an uplift model in production, those whose expected incremental
    value is above 0 (`uplift`, `expected_incremental_value` and `uplift_version` then say
    so). `reason_1`... hold each customer's top reasons when asked for.
    """
    # Compact types, as a base of tens of millions is held to be ranked: IDs as Arrow strings
    # (about 16 bytes a customer instead of 60 for a Python string), segments as categoricals.
    p = np.asarray(probability, dtype=np.float64)
    columns: dict[str, Any] = {
        contract.id_column: active[contract.id_column].astype("string[pyarrow]").array,
        "churn_probability": p,
        "offer": p >= threshold if uplift is None else uplift.value > 0,
    }
    if uplift is not None:
        columns["uplift"] = np.asarray(uplift.uplift, dtype=np.float64)
        columns["expected_incremental_value"] = np.asarray(uplift.value, dtype=np.float64)
        columns[UPLIFT_VERSION] = pd.array([uplift.version] * len(p), dtype="string[pyarrow]")
    for column in contract.segments:
        if contract.features[column].numeric:
            columns[band_column(column)] = band(active[column], contract, column).array
        else:
            columns[column] = active[column].array
    for column in contract.carry:
        columns[column] = active[column].array
    scores = pd.DataFrame(columns)
    if reasons:
        for i in range(len(reasons[0])):
            scores[f"reason_{i + 1}"] = [customer[i]["text"] for customer in reasons]
    return scores


def rank(scores: pd.DataFrame, model_version: str) -> pd.DataFrame:
    """Scored customers most at risk first (rank 1), with the version that scored them."""
    order = ranking.descending_order(scores["churn_probability"].to_numpy())
    scores = scores.take(order).reset_index(drop=True)
    scores.insert(0, "rank", np.arange(1, len(scores) + 1, dtype=np.int64))
    scores["model_version"] = model_version
    return scores


def rank_customers(
    active: pd.DataFrame,
    contract: Contract,
    probability: np.ndarray,
    model_version: str,
    threshold: float,
    reasons: list[list[dict[str, Any]]] | None = None,
) -> pd.DataFrame:
    """A base scored in one piece, ranked (`score_columns`, then `rank`)."""
    return rank(score_columns(active, contract, probability, threshold, reasons), model_version)


def segment_totals(scores: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Customers and expected churners (the sum of probabilities) by the contract's segments
    (e.g. Contract x tenure band x payment method); without segments, the base as one.

    Totals, not means, so that a base scored a partition at a time adds its partitions' up.
    """
    by = segment_columns(contract)
    if not by:
        by = ["segment"]
        scores = scores.assign(segment="all customers")
    grouped = scores.groupby(by, observed=True)["churn_probability"]
    return grouped.agg(customers="size", expected_churners="sum").reset_index()


_TOTALS = ("customers", "expected_churners")


def _segment_keys(totals: pd.DataFrame) -> list[str]:
    """The segment columns of `segment_totals`."""
    return [c for c in totals.columns if c not in _TOTALS]


def combined_totals(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """`segment_totals` of partitions as one of the whole base."""
    if len(parts) == 1:
        return parts[0]
    totals = pd.concat(parts, ignore_index=True)
    return totals.groupby(_segment_keys(totals), observed=True, sort=False).sum().reset_index()


def top_segments(totals: pd.DataFrame, limit: int = 10) -> pd.DataFrame:
    """The segments of `segment_totals` with the highest mean probability.

    `expected_churners` says how many customers a campaign on the segment could keep, which
    is what sizes it.
    """
    customers = int(totals["customers"].sum())
    segments = totals.assign(mean_probability=totals["expected_churners"] / totals["customers"])
    segments = segments[
        [*_segment_keys(totals), "customers", "mean_probability", "expected_churners"]
    ]
    floor = max(_MIN_SEGMENT_CUSTOMERS, int(_MIN_SEGMENT_SHARE * customers))
    large = segments.loc[segments["customers"] >= min(floor, customers)]
    return (
        large.sort_values(["mean_probability", "customers"], ascending=[False, False])
        .head(limit)
        .reset_index(drop=True)
    )


@dataclass(frozen=True)
class ScoreFiles:
    parquet: Path
    csv: Path


def write_scores(scores: pd.DataFrame | Iterable[pa.Table], folder: Path) -> ScoreFiles:
    """Parquet for pipelines, CSV for people; each replaced in one rename.

    `scores` is the ranking whole, or a stream of its batches in order (a base of tens of
    millions ranked by a merge): each batch is written to both files as it comes.
    """
    files = ScoreFiles(folder / f"{SCORES_FILE}.parquet", folder / f"{SCORES_FILE}.csv")
    if isinstance(scores, pd.DataFrame):
        scores = [pa.Table.from_pandas(scores, preserve_index=False)]
    batches = iter(scores)
    first = next(batches, None)
    if first is None:
        raise ValueError("no scores to write")
    probability = first.schema.get_field_index("churn_probability")

    def rounded(batch: pa.Table) -> pa.Table:
        column = pyarrow.compute.round(batch.column(probability), 6)
        return batch.set_column(probability, "churn_probability", column)

    # pyarrow writes CSV an order of magnitude faster than pandas' float formatting; no value
    # here needs quotes (levels and reasons hold no commas), and one that did would raise
    # rather than corrupt the file.
    options = pyarrow.csv.WriteOptions(quoting_style="none")
    with (
        replacing(files.parquet) as parquet_file,
        replacing(files.csv) as csv_file,
        pyarrow.parquet.ParquetWriter(parquet_file, first.schema) as parquet,
        pyarrow.csv.CSVWriter(csv_file, rounded(first).schema, write_options=options) as csv,
    ):
        for batch in itertools.chain([first], batches):
            parquet.write_table(batch)
            csv.write_table(rounded(batch))
    return files

"""Cleaning: customers typed by the data contract, from an export that passed validation.

Numbers are parsed and their blanks filled by the contract's `blank` rules, categories mapped
and typed with their levels, the target turned into 0/1 and duplicate IDs dropped. A frame
that has not been through the data checks is validated first (see `validation`), so nothing
unchecked is ever cleaned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from churn_assets.ml.data.contract import HISTORY_COLUMNS, Contract
from churn_assets.ml.data.reading import (
    EXTRA_COLUMNS,
    CustomerDataError,
    mapped_levels,
    require_columns,
    stripped,
)
from churn_assets.ml.data.validation import numbers_filled, parse_numbers, validate


@dataclass(frozen=True)
class CleaningReport:
    """What cleaning changed, for the asset's metadata."""

    rows_in: int
    rows_out: int
    duplicate_ids_dropped: int
    #: Blank numbers filled by their contract `blank` rule (or kept missing), per feature.
    blanks_filled: dict[str, int] = field(default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)


def check_columns(raw: pd.DataFrame, contract: Contract) -> list[str]:
    """The contract's columns the frame lacks (raised as an error) and the export's extra ones.

    A missing column is named as the export names it: that is the header a person fixes.
    """
    if raw.empty:
        raise CustomerDataError("customer data has no rows")
    require_columns(contract, set(raw.columns), renamed=True)
    known = (*contract.columns, *HISTORY_COLUMNS)
    return list(raw.attrs.get(EXTRA_COLUMNS, [])) + [c for c in raw.columns if c not in known]


def clean_customers(
    raw: pd.DataFrame,
    contract: Contract,
    *,
    require_both_classes: bool = True,
    validated: bool = False,
) -> tuple[pd.DataFrame, CleaningReport]:
    """Typed customers by the contract: blanks filled, levels as categories, target 0/1.

    Duplicate IDs keep their last row: exports append, so the last row is newest. A frame the
    data checks have passed (`validated`) is not judged again; any other is, and the first
    broken rule is raised (training data must hold churners and stayers; a small incremental
    extract need not).
    """
    check_columns(raw, contract)
    if not validated:
        for result in validate(raw, contract, require_both_classes=require_both_classes):
            if result.rule.blocks_cleaning and result.violations:
                raise CustomerDataError(result.violations[0].message())
    return merge_cleaned([clean_partition(raw, contract)], contract)


def clean_partition(raw: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, CleaningReport]:
    """One partition of a validated table cleaned; `merge_cleaned` makes the table of them."""
    extra = check_columns(raw, contract)
    text = {c: stripped(raw[c]) for c in contract.columns}
    cleaned = pd.DataFrame(
        {contract.id_column: text[contract.id_column].to_numpy()}, index=raw.index
    )
    numbers = numbers_filled(text, parse_numbers(text, contract), contract)
    for column, spec in contract.features.items():
        if spec.numeric:
            values = numbers[column]
            integer = spec.type == "integer" and not bool(values.isna().any())
            cleaned[column] = values.astype(np.int64 if integer else np.float64).to_numpy()
        else:
            # recoded per distinct level (text is categorical), never per customer
            values = mapped_levels(text[column], spec.map).astype("category")
            present = values.cat.remove_unused_categories().cat.categories
            levels = spec.levels or tuple(sorted(str(level) for level in present))
            cleaned[column] = values.cat.set_categories(levels).array
    target = text[contract.target_column]
    cleaned[contract.target_column] = (
        target.isin(contract.target.positive).astype(np.int8).to_numpy()
    )
    # a snapshot's history (first seen, churn date) travels with its customers
    for column in HISTORY_COLUMNS:
        if column in raw.columns:
            cleaned[column] = stripped(raw[column]).to_numpy()
    duplicated = cleaned.duplicated(contract.id_column, keep="last")
    cleaned = cleaned.loc[~duplicated]
    cleaned.attrs = dict(raw.attrs)
    report = CleaningReport(
        rows_in=len(raw),
        rows_out=len(cleaned),
        duplicate_ids_dropped=int(duplicated.sum()),
        blanks_filled={
            c: int((text[c] == "").sum())
            for c in contract.numeric_features
            if contract.features[c].blank
        },
        extra_columns=extra,
    )
    return cleaned, report


def data_levels(contract: Contract) -> list[str]:
    """The categorical features whose levels come from the data (the contract lists none):
    each partition finds its own, and the table's are their union, sorted."""
    return [c for c, spec in contract.features.items() if not spec.numeric and spec.levels is None]


def merge_reports(reports: list[CleaningReport], rows_out: int, across: int) -> CleaningReport:
    """The reports of consecutive partitions as one; `across`: IDs dropped because a later
    partition holds them again."""
    blanks: dict[str, int] = {}
    for report in reports:
        for column, count in report.blanks_filled.items():
            blanks[column] = blanks.get(column, 0) + count
    return CleaningReport(
        rows_in=sum(r.rows_in for r in reports),
        rows_out=rows_out,
        duplicate_ids_dropped=sum(r.duplicate_ids_dropped for r in reports) + across,
        blanks_filled=blanks,
        extra_columns=reports[0].extra_columns,
    )


def merge_cleaned(
    parts: list[tuple[pd.DataFrame, CleaningReport]], contract: Contract
) -> tuple[pd.DataFrame, CleaningReport]:
    """The cleaned table of consecutive partitions, as cleaning it whole gives: one level set
    per category, and an ID seen in two partitions kept from the later one only."""
    frames = [frame for frame, _ in parts]
    if len(frames) > 1:
        for column in data_levels(contract):
            levels = sorted({str(level) for f in frames for level in f[column].cat.categories})
            for frame in frames:
                frame[column] = frame[column].cat.set_categories(levels)
    cleaned, across = frames[0], 0  # a partition's own duplicates are gone already
    if len(frames) > 1:
        cleaned = pd.concat(frames)
        duplicated = cleaned.duplicated(contract.id_column, keep="last")
        cleaned, across = cleaned.loc[~duplicated], int(duplicated.sum())
    cleaned = cleaned.reset_index(drop=True)
    cleaned.attrs = dict(frames[0].attrs)
    return cleaned, merge_reports([report for _, report in parts], len(cleaned), across)

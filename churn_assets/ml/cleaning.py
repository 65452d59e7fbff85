"""Reading and cleaning the customer export, failing loudly on anything it cannot trust.

Every problem is reported with the column, the offending value and an example line of the
file (line 1 is the header), because the person fixing an export needs to find the row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from churn_assets.ml import schema

#: File line of data row 0: line 1 is the header.
_FIRST_DATA_LINE = 2
#: `DataFrame.attrs` key carrying the source file's SHA-256 from reading to the split, so the
#: model version can be tagged with the exact file it was trained on.
SOURCE_SHA256 = "source_sha256"


T = TypeVar("T", float, pd.Series)


class CustomerDataError(ValueError):
    """The export cannot be used as training data; the message says where and why."""


@dataclass(frozen=True)
class CleaningReport:
    """What cleaning changed, for the asset's metadata."""

    rows_in: int
    rows_out: int
    duplicate_ids_dropped: int
    total_charges_filled: int
    extra_columns: list[str] = field(default_factory=list)


def billed_so_far(tenure: T, monthly_charges: T) -> T:
    """What a blank TotalCharges stands for: the export leaves it blank for customers not
    billed yet (tenure 0), for whom tenure x monthly charge is 0. Serving applies the same rule.
    """
    return tenure * monthly_charges


#: Columns read as categories of their raw text: a handful of distinct values each, so a
#: million rows cost a byte each instead of a Python string each (about 60 bytes), and cleaning
#: checks and converts each distinct value once. The ID and TotalCharges are nearly unique.
_TEXT_COLUMNS = (schema.ID_COLUMN, "TotalCharges")
_READ_DTYPES = {c: ("str" if c in _TEXT_COLUMNS else "category") for c in schema.RAW_COLUMNS}


def read_customer_csv(path: Path, sha256: str) -> pd.DataFrame:
    """Read the export as text exactly as written, so cleaning sees every quirk.

    Low-cardinality columns come back as categoricals whose categories are that raw text.
    """
    if not path.is_file():
        raise CustomerDataError(
            f"customer file {path} does not exist: set CHURN_DATA_PATH or generate one with "
            f"`churn generate-data --out {path}`"
        )
    if path.stat().st_size == 0:
        raise CustomerDataError(f"customer file {path} is empty: expected a header and rows")
    header = pd.read_csv(path, nrows=0).columns
    dtypes = {c: _READ_DTYPES.get(c, "str") for c in header}
    frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_filter=False)
    if frame.empty:
        raise CustomerDataError(f"customer file {path} has a header but no customer rows")
    frame.attrs[SOURCE_SHA256] = sha256
    return frame


def _example(raw: pd.DataFrame, mask: np.ndarray | pd.Series) -> str:
    """Describe the first offending row as 'line N (customerID X)'."""
    position = int(np.flatnonzero(np.asarray(mask))[0])
    customer = raw[schema.ID_COLUMN].iloc[position] if schema.ID_COLUMN in raw else "?"
    return f"line {position + _FIRST_DATA_LINE} (customerID {customer!r})"


def _fail(raw: pd.DataFrame, column: str, mask: pd.Series, problem: str) -> None:
    count = int(np.asarray(mask).sum())
    value = raw[column].iloc[int(np.flatnonzero(np.asarray(mask))[0])]
    raise CustomerDataError(
        f"column {column!r}: {count} row(s) {problem}, e.g. {value!r} at {_example(raw, mask)}"
    )


def _check_columns(raw: pd.DataFrame) -> list[str]:
    if raw.empty:
        raise CustomerDataError("customer data has no rows")
    missing = [c for c in schema.RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise CustomerDataError(
            f"missing required column(s) {', '.join(map(repr, missing))}; "
            f"found columns: {', '.join(map(str, raw.columns))}"
        )
    return [c for c in raw.columns if c not in schema.RAW_COLUMNS]


def _stripped(values: pd.Series) -> pd.Series:
    """Text without surrounding blanks; a categorical is stripped once per category."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return values.astype(str).str.strip()
    stripped = values.cat.categories.astype(str).str.strip()
    levels, position = np.unique(stripped.to_numpy(dtype=str), return_inverse=True)
    codes = values.cat.codes.to_numpy()
    recoded = np.where(codes >= 0, position[codes], -1)
    return pd.Series(pd.Categorical.from_codes(recoded, levels), index=values.index)


def _to_number(text: pd.Series) -> pd.Series:
    """Floats, NaN where the text is not a number; a categorical is parsed once per category."""
    if not isinstance(text.dtype, pd.CategoricalDtype):
        return pd.to_numeric(text, errors="coerce").astype(np.float64)
    parsed = pd.to_numeric(text.cat.categories, errors="coerce").to_numpy(dtype=np.float64)
    codes = text.cat.codes.to_numpy()
    return pd.Series(np.where(codes >= 0, parsed[codes], np.nan), index=text.index)


def _parse_number(raw: pd.DataFrame, text: pd.Series, column: str) -> pd.Series:
    values = _to_number(text)
    _reject(raw, column, values.isna() & (text != ""), "are not numbers")
    return values


def _reject(raw: pd.DataFrame, column: str, mask: pd.Series, problem: str) -> None:
    if bool(mask.any()):
        _fail(raw, column, mask, problem)


def _clean_numeric(raw: pd.DataFrame, text: dict[str, pd.Series]) -> tuple[pd.DataFrame, int]:
    tenure = _parse_number(raw, text["tenure"], "tenure")
    monthly = _parse_number(raw, text["MonthlyCharges"], "MonthlyCharges")
    total = _parse_number(raw, text["TotalCharges"], "TotalCharges")
    for column, values in (("tenure", tenure), ("MonthlyCharges", monthly)):
        _reject(raw, column, values.isna(), "are blank")
    _reject(raw, "tenure", tenure != tenure.round(), "are not whole months")
    senior = text["SeniorCitizen"]
    _reject(raw, "SeniorCitizen", ~senior.isin(["0", "1"]), "are not 0 or 1")
    blank_total = total.isna()
    total = total.where(~blank_total, billed_so_far(tenure, monthly))
    numeric = pd.DataFrame(
        {
            "SeniorCitizen": (senior == "1").to_numpy(dtype=np.int64),
            "tenure": tenure.astype(np.int64),
            "MonthlyCharges": monthly.astype(np.float64),
            "TotalCharges": total.astype(np.float64),
        }
    )
    for column, (low, high) in schema.NUMERIC_RANGES.items():
        values = numeric[column]
        _reject(raw, column, values < low, f"are below the minimum {low}")
        _reject(raw, column, values > high, f"are above the plausible maximum {high}")
    return numeric, int(blank_total.sum())


def clean_customers(
    raw: pd.DataFrame, *, require_both_classes: bool = True
) -> tuple[pd.DataFrame, CleaningReport]:
    """Typed, validated customers: categorical levels checked, target 0/1, one row per ID.

    Duplicate customerIDs keep their last row: exports append, so the last row is newest.
    Training data must hold churners and stayers; a small incremental extract need not.
    """
    extra = _check_columns(raw)
    text = {c: _stripped(raw[c]) for c in schema.RAW_COLUMNS}
    ids = text[schema.ID_COLUMN]
    _reject(raw, schema.ID_COLUMN, ids == "", "are blank")

    categorical = {}
    for column, levels in schema.CATEGORICAL_LEVELS.items():
        values = text[column]
        unknown = ~values.isin(levels)
        if bool(unknown.any()):
            _fail(raw, column, unknown, f"have a level outside {list(levels)}")
        categorical[column] = pd.Categorical(values, categories=levels)

    target = text[schema.TARGET_COLUMN]
    _reject(raw, schema.TARGET_COLUMN, ~target.isin(schema.TARGET_LEVELS), "are not 'Yes' or 'No'")
    numeric, filled = _clean_numeric(raw, text)

    cleaned = pd.DataFrame({schema.ID_COLUMN: ids.to_numpy()}, index=raw.index)
    for column in schema.FEATURE_COLUMNS:
        cleaned[column] = categorical[column] if column in categorical else numeric[column]
    cleaned[schema.TARGET_COLUMN] = (target == "Yes").astype(np.int8).to_numpy()

    duplicated = cleaned.duplicated(schema.ID_COLUMN, keep="last")
    cleaned = cleaned.loc[~duplicated].reset_index(drop=True)
    cleaned.attrs = dict(raw.attrs)
    classes = set(cleaned[schema.TARGET_COLUMN].unique().tolist())
    if require_both_classes and classes != {0, 1}:
        only = "Yes" if classes == {1} else "No"
        raise CustomerDataError(
            f"column {schema.TARGET_COLUMN!r} has a single class: every row is {only!r}, "
            f"e.g. {_example(raw, np.ones(len(raw), dtype=bool))}; a churn model needs both"
        )
    report = CleaningReport(
        rows_in=len(raw),
        rows_out=len(cleaned),
        duplicate_ids_dropped=int(duplicated.sum()),
        total_charges_filled=filled,
        extra_columns=extra,
    )
    return cleaned, report

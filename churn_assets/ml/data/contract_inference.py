"""`churn contract infer FILE`: a draft data contract from an export, for a person to edit.

The draft is a guess and says so: types from what parses, ranges from what was seen, levels
of low-cardinality columns, the likely ID (unique, named like one) and target (two codes, named
like churn), and columns that look derived from the target (a churn score or reason) put in
`drop`, because a model that reads them learns the answer, not the customer. Names that are
not identifiers (`Tenure Months`) get a `rename` to one, since the API's fields and the
model's features need plain names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from churn_assets.ml.data.contract import RESERVED, name_problem, parse_contract
from churn_assets.ml.data.reading import CustomerDataError, open_regular

#: Rows read to draft a contract: enough to see every level of a category.
SAMPLE_ROWS = 200_000
#: A column with more distinct values than this is not listed as a category.
MAX_LEVELS = 30
_TARGET_NAME = re.compile(r"churn|attrition|exited|target|label|left", re.IGNORECASE)
_ID_NAME = re.compile(r"(^|[^a-z])id$|_id$|^id|customer.?id|account|number", re.IGNORECASE)
_POSITIVE_CODES = ("yes", "y", "true", "1", "churned", "churn", "left", "exited")
_NEGATIVE_CODES = ("no", "n", "false", "0", "stayed", "active", "retained")


def identifier(name: str) -> str:
    """A plain name for a column: letters, digits and underscores, not starting with a digit,
    and none the platform or the API's request models keep for themselves."""
    plain = re.sub(r"\W+", "_", name.strip()).strip("_") or "column"
    plain = f"c_{plain}" if plain[0].isdigit() or plain.startswith("model_") else plain
    return f"{plain}_" if plain in RESERVED or name_problem(plain) else plain


def _numbers(text: pd.Series) -> pd.Series | None:
    present = text[text != ""]
    parsed = pd.to_numeric(present, errors="coerce")
    if present.empty or bool(parsed.isna().any()):
        return None
    return parsed


def _target(frame: pd.DataFrame) -> tuple[str, list[str], list[str]] | None:
    """The likeliest target: named like churn, exactly two codes."""
    for column in frame.columns:
        codes = sorted(set(frame[column]) - {""})
        if len(codes) == 2 and _TARGET_NAME.search(column):
            lowered = [c.lower() for c in codes]
            positive = next(
                (c for c, low in zip(codes, lowered, strict=True) if low in _POSITIVE_CODES), None
            )
            if positive is None:
                negative_first = next(
                    (c for c, low in zip(codes, lowered, strict=True) if low in _NEGATIVE_CODES),
                    None,
                )
                # otherwise the rarer code: churners are the minority
                positive = (
                    next(c for c in codes if c != negative_first)
                    if negative_first
                    else str(frame[column].value_counts().idxmin())
                )
            return column, [positive], [c for c in codes if c != positive]
    return None


def _read_sample(path: Path) -> pd.DataFrame:
    with open_regular(path, follow_symlinks=True) as handle:
        try:
            frame = pd.read_csv(
                handle, dtype=str, keep_default_na=False, nrows=SAMPLE_ROWS, encoding="utf-8"
            )
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise CustomerDataError(
                f"{path} cannot be read as a UTF-8 CSV: {type(error).__name__}"
            ) from None
    if frame.empty:
        raise CustomerDataError(f"{path} has no rows to infer a contract from")
    return frame.apply(lambda values: values.str.strip())


def _feature(column: str, values: pd.Series, notes: list[str]) -> dict[str, Any] | None:
    """A column's draft feature, or None when it is free text (dropped)."""
    numbers = _numbers(values)
    blanks = bool((values == "").any())
    if numbers is not None:
        whole = bool((numbers == numbers.round()).all())
        low, high = min(0, int(np.floor(numbers.min()))), int(np.ceil(numbers.max()))
        spec: dict[str, Any] = {"type": "integer" if whole else "number", "min": low, "max": high}
        if blanks:
            spec["blank"] = "missing"
            notes.append(f"{column!r} has blanks: kept missing (or write a rule)")
        return spec
    distinct = values.nunique()
    if distinct > MAX_LEVELS:
        notes.append(f"{column!r} dropped: {distinct:,} distinct texts (free text or PII)")
        return None
    spec = {"type": "category", "levels": sorted(set(values) - {""})}
    if blanks:
        spec["map"] = {"": "(blank)"}
        spec["levels"].append("(blank)")
    return spec


def infer_contract(path: Path) -> str:
    """The draft contract for the CSV at `path`, as commented YAML."""
    frame = _read_sample(path)
    rows = len(frame)
    notes: list[str] = [f"drafted from {rows:,} row(s) of {path.name}: check every line"]
    target = _target(frame)
    if target is None:
        raise CustomerDataError(
            f"{path}: no column looks like the target (two codes, named like churn/exited/"
            "label); write the contract's `target` by hand"
        )
    target_column, positive, negative = target
    id_column = None
    features: dict[str, dict[str, Any]] = {}
    drop: list[str] = []
    for column in frame.columns:
        values = frame[column]
        if column == target_column:
            continue
        if _TARGET_NAME.search(column):
            drop.append(column)
            notes.append(f"{column!r} dropped: named like the target, it may leak it")
        elif id_column is None and rows > 1 and values.is_unique and _ID_NAME.search(column):
            id_column = column
        elif (spec := _feature(column, values, notes)) is not None:
            features[column] = spec
        else:
            drop.append(column)
    if id_column is None:
        notes.append("no ID column found: a stable row hash will stand in (or set `id`)")
    named = [c for c in (id_column, target_column, *features) if c]
    rename = {c: identifier(c) for c in named if identifier(c) != c}
    contract: dict[str, Any] = {"version": 1}
    if id_column:
        contract["id"] = rename.get(id_column, id_column)
    contract["target"] = {
        "column": rename.get(target_column, target_column),
        "positive": positive,
        "negative": negative,
    }
    if rename:
        contract["rename"] = rename
    if drop:
        contract["drop"] = drop
    contract["features"] = {rename.get(c, c): spec for c, spec in features.items()}
    text = yaml.safe_dump(contract, sort_keys=False, allow_unicode=True, width=100)
    parse_contract(text, f"the draft for {path}")  # a draft that does not load is a bug here
    return "".join(f"# {note}\n" for note in notes) + text

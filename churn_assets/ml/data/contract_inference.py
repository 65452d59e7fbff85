"""`churn contract infer FILE`: a draft data contract from an export, for a person to edit.

The draft is a guess and says so, with a comment on each line it had to choose:

- the ID is a real customer ID (unique, named like `CustomerId`); row counters (1..n or
  0..n-1 in order, or named like `RowNumber`) go in `drop`, as do other identifiers;
- the target has two codes and is named like churn; columns named like it (a churn score,
  reason or recoded flag), and any feature that alone separates churners from stayers
  (single-column AUC of 0.99 or more), go in `drop`: a model that reads them learns the
  answer, not the customer;
- numbers get a range with room: `min: 0` where nothing seen was negative, and `max` about
  twice the largest value seen, because the API and the data checks refuse values outside
  it, and a sample's own maximum refuses next month's largest customers;
- text is a category, its levels listed when there are at most 30 and learned from the
  training rows when there are more (LightGBM handles many levels); text that is unique or
  nearly unique per row, or named like a person's name, phone number or address, is PII or
  free text and goes in `drop`; so do columns with one value in every row;
- a few categories of 2-10 levels that a campaign plans by (contract, plan, geography) are
  suggested as `segments`.

Names that are not identifiers (`Tenure Months`) get a `rename` to one, since the API's
fields and the model's features need plain names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from churn_assets.ml.data.contract import MAX_LEVELS as MAX_CATEGORY_LEVELS
from churn_assets.ml.data.contract import identifier, parse_contract
from churn_assets.ml.data.reading import CustomerDataError, open_regular, stripped, to_number

#: Rows read to draft a contract: enough to see every level of a category.
SAMPLE_ROWS = 200_000
#: The share of rows that may repeat an ID column's value (an export that appends newer rows
#: of a customer); more, and the column is not an ID.
ID_REPEATS = 0.1
#: A category with at most this many levels has them listed; with more, they are learned.
MAX_LEVELS = 30
#: Text with more distinct values than this share of its rows identifies rows, not kinds of
#: customer (names, phone numbers, free text); the bank export's surnames are 29% distinct.
NEAR_UNIQUE = 0.5
#: A feature that alone ranks churners above stayers this well records the outcome. The
#: quality gate refuses a model, or a feature of it alone, at the same AUC
#: (CHURN_MAX_PLAUSIBLE_AUC); here it is caught before a run is spent on it.
LEAKAGE_AUC = 0.99
#: Fewer churners or stayers than this in the sample: no AUC is trusted to mean leakage.
LEAKAGE_MIN_CLASS = 20
#: Segments suggested: at most this many, of categories with 2 to SEGMENT_MAX_LEVELS levels,
#: leaving SEGMENT_MIN_CUSTOMERS customers per combination on average (churn_scores leaves
#: out combinations smaller than 20 customers or 0.5% of the base).
MAX_SEGMENTS = 2
SEGMENT_MAX_LEVELS = 10
SEGMENT_MIN_CUSTOMERS = 20

_TARGET_NAME = re.compile(r"churn|attrition|exited|target|label|left", re.IGNORECASE)
_POSITIVE_CODES = ("yes", "y", "true", "1", "churned", "churn", "left", "exited")
_NEGATIVE_CODES = ("no", "n", "false", "0", "stayed", "active", "retained")
#: A customer's own ID: `CustomerId`, `customer_id`, `customerID`, `Account Number`...
_CUSTOMER_ID = re.compile(
    r"^(customer|cust|client|account|acct|subscriber|member|user|contract)[\W_]?"
    r"(id|no|num|number|code|key)$",
    re.IGNORECASE,
)
#: Any other ID: `id`, `ID`, `loan_id`, `LoanId`.
_ANY_ID = re.compile(r"^id$|[\W_]id$|^id[\W_]|[a-z](Id|ID)$", re.IGNORECASE)
_ROW_COUNTER = re.compile(
    r"^(row[\W_]?(number|num|no|nr|id|index)?|index|idx|unnamed:?\s*0|#|s\.?no|sr[\W_]?no)$",
    re.IGNORECASE,
)
#: Names of columns that hold a person's identity: never a feature, whatever their values.
_PII = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (
            r"^((sur|first|last|full|given|family|middle|maiden|customer|client|user|contact)"
            r"[\W_]?)?name$",
            "a person's name",
        ),
        (r"phone[\W_]?(number|no|num)$|^phone$|^mobile|^msisdn$", "a phone number"),
        (r"e-?mail", "an email address"),
        (r"(^|[\W_])address$|street", "an address"),
        (r"birth|^dob$", "a birth date"),
        (r"^ssn$|social[\W_]?security|passport|^iban$|card[\W_]?number", "an official number"),
    )
)
#: What a retention campaign plans by, most likely first.
_SEGMENT_HINTS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"contract",
        r"plan|tier|package|product|offer|subscription",
        r"geograph|country|region|market|territory",
        r"payment",
        r"channel|segment",
    )
)
#: Not what a campaign singles customers out by.
_PROTECTED = re.compile(
    r"gender|sex|senior|race|ethnic|religio|marital|married|nationality|disab|pregnan",
    re.IGNORECASE,
)


@dataclass
class _Draft:
    """What has been decided so far, with the reason for each choice (a YAML comment)."""

    rows: int
    target: tuple[str, list[str], list[str]]
    id_column: str | None = None
    id_note: str = ""
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    drop: dict[str, str] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Each column as numbers (NaN where blank), None where it is text: parsed once.
    numbers: dict[str, pd.Series | None] = field(default_factory=dict)


def _numbers(text: pd.Series) -> pd.Series | None:
    """The column as numbers (NaN where blank), or None unless every other value parses."""
    numbers = to_number(text)
    blank = (text == "").to_numpy()
    if blank.all() or numbers.isna().to_numpy()[~blank].any():
        return None
    return numbers


def _target(frame: pd.DataFrame) -> tuple[str, list[str], list[str]] | None:
    """The likeliest target: named like churn, exactly two codes."""
    for column in frame.columns:
        if not _TARGET_NAME.search(column):
            continue
        codes = sorted({str(code) for code in frame[column].unique()} - {""})
        if len(codes) == 2:
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
                handle,
                dtype="category",
                keep_default_na=False,
                na_filter=False,
                nrows=SAMPLE_ROWS,
                encoding="utf-8",
            )
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise CustomerDataError(
                f"{path} cannot be read as a UTF-8 CSV: {type(error).__name__}"
            ) from None
    if frame.empty:
        raise CustomerDataError(f"{path} has no rows to infer a contract from")
    # stripped once per distinct value, categorical where there are few (reading.stripped)
    return frame.apply(stripped)


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _shown(value: float) -> str:
    return f"{_number(value):,}" if abs(value) >= 10_000 else f"{_number(value)}"


def _room(value: float) -> int | float:
    """About twice `value` (> 0), rounded up to a round number: 72 -> 150, 850 -> 2000."""
    target = 2 * value
    scale = 10 ** math.floor(math.log10(target))
    step = next(s for s in (1, 1.5, 2, 2.5, 5, 10) if s * scale >= target * (1 - 1e-12))
    return _number(round(step * scale, 12))


def _row_counter(column: str, values: pd.Series, numbers: pd.Series | None) -> str | None:
    """Why `column` is a row counter, or None: 1..n or 0..n-1 in order, or named like one."""
    if numbers is not None and len(values) > 1:
        counted = numbers.to_numpy(dtype=np.float64)
        for first in (1, 0):
            if np.array_equal(counted, np.arange(first, first + len(values))):
                return f"a row counter ({first}..{first + len(values) - 1:,} in order)"
    if _ROW_COUNTER.match(column) and values.is_unique:
        return "a row counter (named like one, unique)"
    return None


def _id_rank(column: str) -> int | None:
    """How surely `column` names a customer's ID (0: surest), or None when it does not."""
    if _CUSTOMER_ID.match(column):
        return 0
    if _ANY_ID.search(column):
        return 1
    return None


def _numeric_feature(column: str, numbers: pd.Series, blanks: int, draft: _Draft) -> None:
    whole = bool((numbers == numbers.round()).all())
    low, high = float(numbers.min()), float(numbers.max())
    spec: dict[str, Any] = {"type": "integer" if whole else "number"}
    if whole and low >= 0 and high <= 1:
        spec.update(min=0, max=1)
        comment = "a 0/1 flag"
    else:
        spec["min"] = 0 if low >= 0 else -_room(-low)
        if high > 0:
            spec["max"] = _room(high)
        elif low < 0:
            spec["max"] = 0
        comment = f"seen {_shown(low)} to {_shown(high)}"
    if blanks:
        spec["blank"] = "missing"
        comment += f"; blank in {_count(blanks, 'row')}: kept missing (or write a rule)"
    draft.features[column] = spec
    draft.comments[column] = comment


def _category_feature(column: str, values: pd.Series, draft: _Draft) -> None:
    present = values[values != ""]
    distinct = present.nunique()
    if distinct > MAX_LEVELS and distinct > NEAR_UNIQUE * len(present):
        draft.drop[column] = (
            f"nearly unique text ({distinct:,} values in {_count(len(present), 'row')}): "
            "it tells rows apart (a name, a number, free text), not kinds of customer"
        )
        return
    if distinct > MAX_CATEGORY_LEVELS:
        draft.drop[column] = (
            f"{_count(distinct, 'distinct value')}: more levels than a category may have "
            f"({MAX_CATEGORY_LEVELS:,}); group them (by region, say) to use it"
        )
        return
    spec: dict[str, Any] = {"type": "category"}
    blank = bool((values == "").any())
    if blank:
        spec["map"] = {"": "(blank)"}
    if distinct <= MAX_LEVELS:
        spec["levels"] = sorted(set(present)) + (["(blank)"] if blank else [])
        comment = "blank read as the level (blank)" if blank else ""
    else:
        comment = (
            f"{distinct:,} levels, learned from the training rows (too many to list); "
            "LightGBM handles many"
        )
    draft.features[column] = spec
    if comment:
        draft.comments[column] = comment


def _rank_auc(score: np.ndarray, churned: np.ndarray) -> float:
    """How well `score` ranks churners above stayers, either way round (ties count half)."""
    ranks = pd.Series(score).rank(method="average").to_numpy()
    positives = int(churned.sum())
    negatives = len(churned) - positives
    auc = (ranks[churned].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    return float(max(auc, 1.0 - auc))


def _alone_auc(values: pd.Series, churned: np.ndarray, numbers: pd.Series | None) -> float:
    """The AUC of one column alone as a churn score.

    A number scores as itself, blanks ranked lowest and then highest (a field filled only for
    customers who left leaks through its blanks). A category scores as its level's churn rate
    in the other half of the rows, so a level seen once cannot score its own row.
    """
    if numbers is not None:
        low, high = float(numbers.min()), float(numbers.max())
        return max(
            _rank_auc(numbers.fillna(fill).to_numpy(), churned) for fill in (low - 1, high + 1)
        )
    codes = pd.factorize(values)[0]
    half = np.arange(len(codes)) % 2 == 0
    score = np.empty(len(codes))
    overall = float(churned.mean())
    for part in (half, ~half):
        # each level's churn rate among the other half's rows (the overall rate if unseen)
        churners = np.bincount(codes[~part], weights=churned[~part], minlength=codes.max() + 1)
        counts = np.bincount(codes[~part], minlength=codes.max() + 1)
        rates = np.divide(churners, counts, out=np.full(len(counts), overall), where=counts > 0)
        score[part] = rates[codes[part]]
    return _rank_auc(score, churned)


def _drop_leaks(frame: pd.DataFrame, draft: _Draft) -> None:
    column, positive, negative = draft.target
    known = frame[column].isin([*positive, *negative]).to_numpy()
    churned = frame[column].isin(positive).to_numpy()[known]
    churners = int(churned.sum())
    if min(churners, len(churned) - churners) < LEAKAGE_MIN_CLASS:
        draft.notes.append(
            f"too few churners or stayers (under {LEAKAGE_MIN_CLASS} of either) to look for "
            "features that give the target away: check `drop` by hand"
        )
        return
    for feature, spec in list(draft.features.items()):
        numbers = draft.numbers[feature] if spec["type"] != "category" else None
        auc = _alone_auc(
            frame[feature][known], churned, None if numbers is None else numbers[known]
        )
        if auc >= LEAKAGE_AUC:
            del draft.features[feature]
            draft.comments.pop(feature, None)
            draft.drop[feature] = (
                f"alone it separates churners from stayers (AUC {auc:.3f}): it records the "
                "outcome, so a model would learn the answer; keep it only if it is known "
                "before a customer leaves"
            )


def _suggest_segments(draft: _Draft) -> None:
    candidates = []
    for column, spec in draft.features.items():
        levels = len(spec.get("levels") or ())
        if spec["type"] != "category" or not 2 <= levels <= SEGMENT_MAX_LEVELS:
            continue
        if _PROTECTED.search(column):
            continue
        hint = next((i for i, p in enumerate(_SEGMENT_HINTS) if p.search(column)), None)
        if hint is not None:
            candidates.append((hint, column, levels))
    combinations = 1
    for _, column, levels in sorted(candidates, key=lambda c: c[0]):
        if len(draft.segments) == MAX_SEGMENTS:
            break
        if combinations * levels * SEGMENT_MIN_CUSTOMERS <= draft.rows:
            draft.segments.append(column)
            combinations *= levels


def _classify(frame: pd.DataFrame, draft: _Draft) -> None:
    """Each column's part: the ID, a feature, or `drop` with the reason."""
    target_column = draft.target[0]
    columns = [c for c in frame.columns if c != target_column]
    why_not: dict[str, str] = {}
    for column in columns:
        values = frame[column]
        if _TARGET_NAME.search(column):
            why_not[column] = (
                "named like the target: a churn score, reason or recoded flag gives the answer away"
            )
        elif values.nunique() <= 1:
            shown = repr(values.iloc[0]) if values.iloc[0] else "blank"
            why_not[column] = f"the same value ({shown[:40]}) in every row: nothing to learn"
        elif counter := _row_counter(column, values, draft.numbers[column]):
            why_not[column] = f"{counter}: not a property of the customer"
        elif kind := next((k for p, k in _PII if p.search(column)), None):
            why_not[column] = f"named like {kind}: personal data, not a model input"
    # the surest customer ID: named like one, never blank, (nearly) unique; an export that
    # appends a customer's newer rows repeats IDs, and cleaning keeps the last of each
    ids = sorted(
        (rank, repeats, position, column)
        for position, column in enumerate(columns)
        if column not in why_not
        and (rank := _id_rank(column)) is not None
        and draft.rows > 1
        and not (frame[column] == "").any()
        and (repeats := draft.rows - frame[column].nunique()) <= ID_REPEATS * draft.rows
    )
    if ids:
        _, repeats, _, draft.id_column = ids[0]
        draft.id_note = (
            f"named like a customer ID; {_count(repeats, 'row')} repeat an ID (cleaning keeps "
            "the last of each)"
            if repeats
            else "unique in every row and named like a customer ID"
        )
        for _, _, _, other in ids[1:]:
            why_not[other] = f"another ID (the contract's ID is {draft.id_column!r})"
    for column in columns:
        if column in why_not:
            draft.drop[column] = why_not[column]
        elif column != draft.id_column:
            values = frame[column]
            numbers = draft.numbers[column]
            if numbers is not None:
                _numeric_feature(column, numbers.dropna(), int((values == "").sum()), draft)
            else:
                _category_feature(column, values, draft)


def _flow(value: Any) -> str:
    """`value` as one line of flow-style YAML."""
    return yaml.safe_dump(
        value, default_flow_style=True, sort_keys=False, allow_unicode=True, width=math.inf
    ).strip()


def _scalar(value: str) -> str:
    return _flow([value])[1:-1]


def _line(text: str, comment: str = "") -> str:
    return f"{text}  # {comment}\n" if comment else f"{text}\n"


def _render(draft: _Draft, source: str) -> str:
    target_column, positive, negative = draft.target
    named = [c for c in (draft.id_column, target_column, *draft.features) if c]
    rename = {c: identifier(c) for c in named if identifier(c) != c}
    lines = [
        f"# A draft contract from {_count(draft.rows, 'row')} of {source}: check every line. "
        "The comments say\n",
        "# why each choice was made; delete them once you agree.\n",
        *(f"# {note}\n" for note in draft.notes),
        "version: 1\n",
    ]
    if draft.id_column:
        lines.append(
            _line(f"id: {_scalar(rename.get(draft.id_column, draft.id_column))}", draft.id_note)
        )
    else:
        lines.append("# no ID column found: a stable hash of each row stands in (or set `id`)\n")
    target = {"column": rename.get(target_column, target_column), "positive": positive}
    target["negative"] = negative
    lines.append(
        _line(
            f"target: {_flow(target)}",
            f"{_scalar(positive[0])} taken to mean churned: check it",
        )
    )
    if rename:
        lines.append("# the API's fields and the model's features need plain names\n")
        lines.append("rename:\n")
        lines += [f"  {_scalar(old)}: {_scalar(new)}\n" for old, new in rename.items()]
    if draft.drop:
        lines.append("# never read\n")
        lines.append("drop:\n")
        lines += [_line(f"  - {_scalar(c)}", why) for c, why in draft.drop.items()]
    lines += [
        "# Ranges leave room: `min: 0` where nothing seen was negative, and `max` about twice\n",
        "# the largest value seen, since the data checks and the API refuse values outside\n",
        "# them; `seen` is this sample's range. Remove a `max` you cannot vouch for.\n",
        "features:\n",
    ]
    for column, spec in draft.features.items():
        name = _scalar(rename.get(column, column))
        lines.append(_line(f"  {name}: {_flow(spec)}", draft.comments.get(column, "")))
    if draft.segments:
        lines += [
            "# Suggested from categories of 2-10 levels a retention campaign plans by:\n",
            "# churn_scores ranks each combination of their levels and leaves out those under\n",
            "# 20 customers (or 0.5% of the base), so keep to a few levels. A number can be a\n",
            "# segment too, given `bands` (e.g. tenure: bands: [12, 24, 48]).\n",
        ]
        lines.append(f"segments: {_flow([rename.get(c, c) for c in draft.segments])}\n")
    return "".join(lines)


def infer_contract(path: Path) -> str:
    """The draft contract for the CSV at `path`, as commented YAML."""
    frame = _read_sample(path)
    target = _target(frame)
    if target is None:
        raise CustomerDataError(
            f"{path}: no column looks like the target (two codes, named like churn/exited/"
            "label); write the contract's `target` by hand"
        )
    draft = _Draft(rows=len(frame), target=target)
    draft.numbers = {column: _numbers(frame[column]) for column in frame.columns}
    _classify(frame, draft)
    _drop_leaks(frame, draft)
    _suggest_segments(draft)
    if not draft.features:
        raise CustomerDataError(
            f"{path}: no column is left to learn from (each is the ID, the target, or in "
            "`drop`); write the contract's `features` by hand"
        )
    text = _render(draft, path.name)
    parse_contract(text, f"the draft for {path}")  # a draft that does not load is a bug here
    return text

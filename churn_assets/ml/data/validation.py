"""Validation: the data contract's rules judged on the export as read, each on its own.

Every rule looks at the raw text (after the contract's `rename` and `map`), so each can fail by
itself: a row that is not a number fails `value_types` and is skipped by `value_ranges`, a
missing column fails `required_columns` and the others judge the columns that are there. A
violation names the column, the problem, how many rows, one offending value and its file line,
and nothing else of the file. The graph reports each rule as a blocking asset check on
`raw_customers`; cleaning refuses a frame that breaks any rule but the churn rate (a
plausibility bound for training data, not a property of a customer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from churn_assets.ml.data.contract import Contract
from churn_assets.ml.data.limits import MAX_ID_CHARS
from churn_assets.ml.data.reading import (
    file_line,
    mapped_levels,
    missing_columns,
    shown,
    stripped,
    to_number,
)

#: Churn rates outside this band point at a broken extract (wrong file, filtered rows),
#: not at a change in customers: the public data sits at 26.5%.
PLAUSIBLE_CHURN_RATE = (0.05, 0.60)


@dataclass(frozen=True)
class Violation:
    """Rows of one column that break one rule, with the first of them to find in the file."""

    column: str
    problem: str
    count: int
    value: str
    line: int

    def message(self) -> str:
        where = f"e.g. {self.value} at line {self.line}"
        return f"column {self.column!r}: {self.count} row(s) {self.problem}, {where}"

    def as_row(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "problem": self.problem,
            "rows": self.count,
            "example": self.value,
            "line": self.line,
        }


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    #: Cleaning refuses a frame that breaks it; the churn rate is the data checks' alone.
    blocks_cleaning: bool = True


REQUIRED_COLUMNS = Rule("required_columns", "Every column the data contract requires is there.")
CUSTOMER_IDS = Rule(
    "customer_ids", f"Customer IDs are present and at most {MAX_ID_CHARS} characters."
)
VALUE_TYPES = Rule(
    "value_types",
    "Numbers parse, integers are whole, blanks only where the contract gives a blank rule.",
)
CATEGORY_LEVELS = Rule(
    "category_levels", "Categories are not blank and, where the contract lists levels, one of them."
)
VALUE_RANGES = Rule("value_ranges", "Numbers lie within the contract's min and max.")
TARGET_CODES = Rule("target_codes", "The target holds the contract's codes, churned and stayed.")
CHURN_RATE = Rule(
    "churn_rate_plausible",
    f"The churn rate lies in [{PLAUSIBLE_CHURN_RATE[0]:.0%}, {PLAUSIBLE_CHURN_RATE[1]:.0%}].",
    blocks_cleaning=False,
)
RULES = (
    REQUIRED_COLUMNS,
    CUSTOMER_IDS,
    VALUE_TYPES,
    CATEGORY_LEVELS,
    VALUE_RANGES,
    TARGET_CODES,
    CHURN_RATE,
)


@dataclass(frozen=True)
class RuleResult:
    """One rule's verdict: its violations (none when it passed) and the figures behind it."""

    rule: Rule
    violations: list[Violation]
    figures: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        if self.passed:
            return self.rule.description
        return "; ".join(v.message() for v in self.violations[:3]) + (
            f"; and {len(self.violations) - 3} more" if len(self.violations) > 3 else ""
        )


class _Finder:
    """Turns masks of offending rows into violations, naming the first row's file line."""

    def __init__(self, raw: pd.DataFrame) -> None:
        self.raw = raw
        self.found: list[Violation] = []

    def add(self, column: str, mask: pd.Series | np.ndarray, problem: str) -> None:
        flags = np.asarray(mask, dtype=bool)
        if not flags.any():
            return
        first = int(np.flatnonzero(flags)[0])
        value = shown(self.raw[column].iloc[first]) if column in self.raw else "''"
        line = file_line(self.raw, first)
        self.found.append(Violation(column, problem, int(flags.sum()), value, line))

    def take(self) -> list[Violation]:
        found, self.found = self.found, []
        return found


def parse_numbers(text: dict[str, pd.Series], contract: Contract) -> dict[str, pd.Series]:
    """Each present numeric feature parsed: NaN where blank or not a number."""
    return {c: to_number(text[c]) for c in contract.numeric_features if c in text}


def numbers_filled(
    text: dict[str, pd.Series], parsed: dict[str, pd.Series], contract: Contract
) -> dict[str, pd.Series]:
    """The `parsed` numbers with blanks filled by their rule where every number the rule reads
    is there."""
    filled = dict(parsed)
    for column, values in parsed.items():
        rule = contract.features[column].blank
        blank = (text[column] == "").to_numpy()
        if rule is None or not blank.any():
            continue
        try:
            filled[column] = values.where(~blank, contract.blank_fill(column, parsed))
        except KeyError:  # the rule reads a column that is missing: required_columns says so
            continue
    return filled


def _required(raw: pd.DataFrame, contract: Contract) -> RuleResult:
    required = contract.export_names
    missing = missing_columns(contract, set(raw.columns), renamed=True)
    return RuleResult(
        REQUIRED_COLUMNS,
        [Violation(m, "is missing from the header", len(raw), "''", 1) for m in missing],
        {"columns_required": len(required), "columns_present": len(required) - len(missing)},
    )


def _ids(find: _Finder, text: dict[str, pd.Series], contract: Contract) -> RuleResult:
    ids = text.get(contract.id_column)
    if ids is not None and contract.id is not None:
        find.add(contract.id_column, ids == "", "are blank")
        too_long = ids.str.len() > MAX_ID_CHARS
        find.add(contract.id_column, too_long, f"are longer than {MAX_ID_CHARS} characters")
    duplicates = int(ids.duplicated().sum()) if ids is not None else 0
    return RuleResult(CUSTOMER_IDS, find.take(), {"duplicate_ids": duplicates})


def _types(
    find: _Finder, text: dict[str, pd.Series], parsed: dict[str, pd.Series], contract: Contract
) -> RuleResult:
    for column, number in parsed.items():
        spec, values = contract.features[column], text[column]
        find.add(column, number.isna() & (values != ""), "are not numbers")
        if spec.blank is None:
            find.add(column, values == "", "are blank")
        if spec.type == "integer":
            find.add(column, number.notna() & (number != number.round()), "are not whole numbers")
    return RuleResult(
        VALUE_TYPES, find.take(), {"numeric_features": len(contract.numeric_features)}
    )


def _levels(find: _Finder, text: dict[str, pd.Series], contract: Contract) -> RuleResult:
    for column in contract.categorical_features:
        if column not in text:
            continue
        spec = contract.features[column]
        values = mapped_levels(text[column], spec.map)
        find.add(column, values == "", "are blank")
        if spec.levels is not None:
            outside = ~values.isin(spec.levels) & (values != "")
            find.add(column, outside, f"have a level outside {list(spec.levels)}")
    figures: dict[str, float | int | str] = {
        "categorical_features": len(contract.categorical_features)
    }
    return RuleResult(CATEGORY_LEVELS, find.take(), figures)


def _ranges(
    find: _Finder, text: dict[str, pd.Series], parsed: dict[str, pd.Series], contract: Contract
) -> RuleResult:
    observed: dict[str, float | int | str] = {}
    for column, values in numbers_filled(text, parsed, contract).items():
        low, high = contract.numeric_range(column)
        find.add(column, values < low, f"are below the minimum {low:g}")
        find.add(column, values > high, f"are above the plausible maximum {high:g}")
        if values.notna().any():
            observed[f"{column}_min"] = float(values.min())
            observed[f"{column}_max"] = float(values.max())
    return RuleResult(VALUE_RANGES, find.take(), observed)


def _target(
    find: _Finder, text: dict[str, pd.Series], contract: Contract, require_both_classes: bool
) -> tuple[RuleResult, float | None]:
    target = text.get(contract.target_column)
    if target is None:
        return RuleResult(TARGET_CODES, []), None
    column = contract.target_column
    find.add(column, target == "", "are blank")
    allowed = contract.target.allowed()
    if allowed is not None:
        unknown = ~target.isin(allowed) & (target != "")
        find.add(column, unknown, f"are not one of {list(allowed)}")
    churned = target.isin(contract.target.positive)
    present = target != ""
    if not present.any():
        return RuleResult(TARGET_CODES, find.take()), None
    rate = float(churned[present].mean())
    if require_both_classes and churned[present].nunique() == 1:
        only = "churned" if bool(churned[present].iloc[0]) else "stayed"
        find.add(column, present, f"all {only}: a churn model needs churners and stayers")
    return RuleResult(TARGET_CODES, find.take(), {"churn_rate": rate}), rate


def _churn_rate(rate: float | None, rows: int, contract: Contract) -> RuleResult:
    low, high = PLAUSIBLE_CHURN_RATE
    implausible = []
    if rate is not None and not low <= rate <= high:
        problem = f"give a churn rate of {rate:.1%}, outside [{low:.0%}, {high:.0%}]"
        implausible.append(Violation(contract.target_column, problem, rows, "''", 1))
    figures: dict[str, float | int | str] = {"min": low, "max": high}
    if rate is not None:
        figures["churn_rate"] = rate
    return RuleResult(CHURN_RATE, implausible, figures)


def validate(
    raw: pd.DataFrame, contract: Contract, *, require_both_classes: bool = True
) -> list[RuleResult]:
    """Every rule's verdict on a frame as read (the contract's names, text values)."""
    find = _Finder(raw)
    text = {c: stripped(raw[c]) for c in contract.columns if c in raw.columns}
    parsed = parse_numbers(text, contract)  # read by both the type and the range rule
    target, rate = _target(find, text, contract, require_both_classes)
    return [
        _required(raw, contract),
        _ids(find, text, contract),
        _types(find, text, parsed, contract),
        _levels(find, text, contract),
        _ranges(find, text, parsed, contract),
        target,
        _churn_rate(rate, len(raw), contract),
    ]

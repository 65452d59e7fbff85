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

from dataclasses import dataclass, field, replace
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
    #: Which of its rule's tests found it: partitions merged list violations in the order one
    #: pass over the whole table finds them.
    rank: int = field(default=0, compare=False, repr=False)

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
    """Turns masks of offending rows into violations, naming the first row's file line.

    `first_row` is the table row the frame starts at (a partition's offset).
    """

    def __init__(self, raw: pd.DataFrame, first_row: int = 0) -> None:
        self.raw = raw
        self.first_row = first_row
        self.found: list[Violation] = []
        self._tests = 0

    def add(self, column: str, mask: pd.Series | np.ndarray, problem: str) -> None:
        self._tests += 1
        flags = np.asarray(mask, dtype=bool)
        if not flags.any():
            return
        first = int(np.flatnonzero(flags)[0])
        value = shown(self.raw[column].iloc[first]) if column in self.raw else "''"
        line = file_line(self.raw, self.first_row + first)
        self.found.append(
            Violation(column, problem, int(flags.sum()), value, line, rank=self._tests)
        )

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
    # duplicates are counted over the whole table, from every partition's ID hashes (merge)
    return RuleResult(CUSTOMER_IDS, find.take())


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


@dataclass(frozen=True)
class _TargetCounts:
    """A partition's targets, summed over partitions into the table's churn rate."""

    churned: int = 0
    present: int = 0
    #: The first row with a target, shown when the whole table holds only one class.
    first: Violation | None = None


def _target(
    find: _Finder, text: dict[str, pd.Series], contract: Contract
) -> tuple[RuleResult, _TargetCounts]:
    target = text.get(contract.target_column)
    if target is None:
        return RuleResult(TARGET_CODES, []), _TargetCounts()
    column = contract.target_column
    find.add(column, target == "", "are blank")
    allowed = contract.target.allowed()
    if allowed is not None:
        unknown = ~target.isin(allowed) & (target != "")
        find.add(column, unknown, f"are not one of {list(allowed)}")
    present = target != ""
    result = RuleResult(TARGET_CODES, find.take())
    if not present.any():
        return result, _TargetCounts()
    find.add(column, present, "")
    (first,) = find.take()
    churned = int(target[present].isin(contract.target.positive).sum())
    return result, _TargetCounts(churned, int(present.sum()), first)


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


@dataclass(frozen=True)
class PartitionCheck:
    """One partition's findings: `merge` turns every partition's into the table's verdicts,
    so a table of any size is judged a partition at a time, on a Dask worker or in process."""

    first_row: int
    rows: int
    #: Each rule's verdict on the partition alone, but the churn rate (a whole-table figure).
    results: list[RuleResult]
    #: 64-bit hashes of the IDs: duplicates across partitions are counted from them (8 bytes
    #: a customer; a collision among 100 million IDs has odds of about 1 in 3,700).
    id_hashes: np.ndarray
    targets: _TargetCounts


def check_partition(raw: pd.DataFrame, contract: Contract, first_row: int = 0) -> PartitionCheck:
    """The rules judged on rows `first_row` on of a table as read, as far as rows alone can."""
    find = _Finder(raw, first_row)
    text = {c: stripped(raw[c]) for c in contract.columns if c in raw.columns}
    parsed = parse_numbers(text, contract)  # read by both the type and the range rule
    target, counts = _target(find, text, contract)
    ids = text.get(contract.id_column)
    hashes = (
        np.empty(0, np.uint64)
        if ids is None
        else pd.util.hash_pandas_object(ids, index=False).to_numpy()
    )
    results = [
        _required(raw, contract),
        _ids(find, text, contract),
        _types(find, text, parsed, contract),
        _levels(find, text, contract),
        _ranges(find, text, parsed, contract),
        target,
    ]
    return PartitionCheck(first_row, len(raw), results, hashes, counts)


def merge(
    parts: list[PartitionCheck], contract: Contract, *, require_both_classes: bool = True
) -> list[RuleResult]:
    """Every rule's verdict on the table the partitions make up, as one pass over it gives:
    counts summed, the first offending row of the table shown, figures over every row."""
    parts = sorted(parts, key=lambda p: p.first_row)
    rows = sum(p.rows for p in parts)
    rate: float | None = None
    merged = []
    for index, rule in enumerate(RULES[:-1]):
        found = [p.results[index] for p in parts]
        figures = dict(found[0].figures)
        if rule is CUSTOMER_IDS:
            hashes = np.concatenate([p.id_hashes for p in parts])
            figures["duplicate_ids"] = len(hashes) - len(np.unique(hashes))
        if rule is VALUE_RANGES:
            for result in found[1:]:
                for key, value in result.figures.items():
                    pick = min if key.endswith("_min") else max
                    figures[key] = pick(figures.get(key, value), value)  # type: ignore[type-var]
        violations = _merged([result.violations for result in found])
        if rule is TARGET_CODES:
            rate, target_figures, only = _both_classes(parts, contract, require_both_classes)
            figures.update(target_figures)
            violations += only
        merged.append(RuleResult(rule, violations, figures))
    merged.append(_churn_rate(rate, rows, contract))
    return merged


def _merged(per_partition: list[list[Violation]]) -> list[Violation]:
    """Violations of one rule across partitions (in row order): one per column and problem,
    counts summed, the example the first partition found."""
    first: dict[tuple[str, str], Violation] = {}
    counts: dict[tuple[str, str], int] = {}
    for violations in per_partition:
        for violation in violations:
            key = (violation.column, violation.problem)
            first.setdefault(key, violation)
            counts[key] = counts.get(key, 0) + violation.count
    ordered = sorted(first.values(), key=lambda v: v.rank)
    return [replace(v, count=counts[(v.column, v.problem)]) for v in ordered]


def _both_classes(
    parts: list[PartitionCheck], contract: Contract, require_both_classes: bool
) -> tuple[float | None, dict[str, float | int | str], list[Violation]]:
    """The table's churn rate, and its violation when every target is one class."""
    churned = sum(p.targets.churned for p in parts)
    present = sum(p.targets.present for p in parts)
    if not present:
        return None, {}, []
    rate = churned / present
    first = next(p.targets.first for p in parts if p.targets.first is not None)
    only: list[Violation] = []
    if require_both_classes and churned in (0, present):
        which = "churned" if churned else "stayed"
        problem = f"all {which}: a churn model needs churners and stayers"
        only.append(replace(first, problem=problem, count=present))
    return rate, {"churn_rate": rate}, only


def validate(
    raw: pd.DataFrame, contract: Contract, *, require_both_classes: bool = True
) -> list[RuleResult]:
    """Every rule's verdict on a frame as read (the contract's names, text values)."""
    return merge(
        [check_partition(raw, contract)], contract, require_both_classes=require_both_classes
    )

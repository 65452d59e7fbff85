"""`churn contract check CONTRACT --data FILE`: the data checks of a run, on a file, in seconds.

The file is read and judged by the code a training run uses (`reading.open_export`, then
`validation.check_partition` and `validation.merge` a chunk at a time), so the verdict is the
one the `customer_data_contract` checks give a minute into `make run`, without a snapshot,
MLflow or Dagster. It says a little more than a run does: each column's first few offending
lines and values, not one, and a missing column does not hide the rest (the other columns are
judged under the contract without it).
"""

from __future__ import annotations

import csv
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from churn_assets.ml.data import validation
from churn_assets.ml.data.contract import MISSING, Contract
from churn_assets.ml.data.limits import DEFAULT_MAX_LINE_BYTES
from churn_assets.ml.data.reading import SOURCE_PATH, file_line, open_export, open_regular

#: Rows judged at a time; any size gives the same verdict (validation.merge is exact).
CHUNK_ROWS = 1 << 18
#: Offending lines shown for each column and problem.
EXAMPLES = 3

_Key = tuple[str, str, str]  # rule, column, problem
#: Rows after the last example found that are judged again for the next (widened x8 while
#: they hold none): a few rules' passes over a window, not over the rest of the chunk.
_FIRST_WINDOW = 1024


@dataclass(frozen=True)
class Finding:
    """Rows of one column that break one rule, with the first few of them."""

    rule: str
    column: str
    problem: str
    count: int
    #: (file line, value as a message shows it) of the first rows; none for what only the
    #: whole table shows (the churn rate, a single class).
    examples: tuple[tuple[int, str], ...]

    def message(self) -> str:
        said = f"{self.rule}: column {self.column!r}: {self.count:,} row(s) {self.problem}"
        if not self.examples:
            return said
        where = ", ".join(f"line {line} {value}" for line, value in self.examples)
        return f"{said} ({where}{', ...' if self.count > len(self.examples) else ''})"


@dataclass(frozen=True)
class DataReport:
    """What the data checks of a run would say of the file."""

    path: Path
    rows: int
    seconds: float
    #: The contract's columns the header lacks, as the export names them.
    missing: list[str]
    findings: list[Finding]
    figures: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.missing and not self.findings

    def lines(self) -> list[str]:
        """The report as a person reads it: a line per problem, then the verdict."""
        lines = [
            f"data {self.path}: {self.rows:,} row(s) judged by the data checks a run makes, "
            f"in {self.seconds:.1f} s"
        ]
        if self.missing:
            lacks = ", ".join(map(repr, self.missing))
            lines.append(
                f"  required_columns: the header (line 1) lacks {lacks}; add the column(s) to "
                "the export, or map the export's own names to them in the contract's `rename`"
            )
        lines += [f"  {finding.message()}" for finding in self.findings]
        if duplicates := self.figures.get("duplicate_ids"):
            lines.append(
                f"  note: {duplicates:,} duplicate ID(s); cleaning keeps the last row of each"
            )
        if "churn_rate" in self.figures:
            lines.append(f"  churn rate: {float(self.figures['churn_rate']):.1%}")
        problems = len(self.missing) + len(self.findings)
        lines.append(
            "passed: a run's data checks would pass this file"
            if self.passed
            else f"{problems} problem(s): a run would stop at its data checks; fix the file, "
            "or the contract where it is too strict"
        )
        return lines


def header(path: Path) -> list[str] | None:
    """The file's column names, or None when it cannot be parsed (open_export says why)."""
    with open_regular(path, follow_symlinks=True) as handle:
        try:
            return [str(c) for c in pd.read_csv(handle, nrows=0, encoding="utf-8").columns]
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error):
            return None


def without(contract: Contract, columns: set[str]) -> Contract | None:
    """The contract without `columns` (its own names), so the rest of a file lacking them can
    be judged; None when nothing would be left to judge (the target or every feature gone)."""
    if contract.target_column in columns or not set(contract.features) - columns:
        return None
    data = contract.model_dump(mode="json", exclude_defaults=True)
    if contract.id in columns:
        del data["id"]
    data["features"] = {c: s for c, s in data["features"].items() if c not in columns}
    for spec in data["features"].values():
        rule = spec.get("blank")
        if rule not in (None, MISSING) and set(re.findall(r"[A-Za-z_]\w*", rule)) & columns:
            spec["blank"] = MISSING  # its rule reads a missing column
    for key in ("segments", "carry"):
        data[key] = [c for c in data.get(key, ()) if c not in columns]
    data["rename"] = {old: new for old, new in contract.rename.items() if new not in columns}
    return Contract.model_validate(data)


def check_data(
    path: Path,
    contract: Contract,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    examples: int = EXAMPLES,
    chunk_rows: int = CHUNK_ROWS,
) -> DataReport:
    """Judge the file at `path` as a run's data checks would, `chunk_rows` at a time; a file
    that cannot be read at all raises the CustomerDataError a run would fail with."""
    started = time.monotonic()
    names = header(path)
    gone = (
        set()
        if names is None
        else {column for column, export in contract.export_names.items() if export not in names}
    )
    missing = [contract.export_names[c] for c in contract.export_names if c in gone]
    judged = without(contract, gone) if gone else contract
    if judged is None:
        return DataReport(path, 0, time.monotonic() - started, missing, [])
    parts = []
    found: dict[_Key, list[tuple[int, str]]] = {}
    with open_export(path, judged, max_line_bytes=max_line_bytes) as export:
        for frame in export.frames(chunk_rows):
            part = validation.check_partition(frame, judged, first_row=int(frame.index[0]))
            parts.append(part)
            _collect(frame, judged, part, found, examples)
    results = validation.merge(parts, judged)
    findings = [
        Finding(
            result.rule.name,
            violation.column,
            violation.problem,
            violation.count,
            # none for what only the whole table shows (the churn rate, a single class)
            tuple(found.get((result.rule.name, violation.column, violation.problem), ())),
        )
        for result in results
        for violation in result.violations
    ]
    figures = {
        key: value
        for result in results
        for key, value in result.figures.items()
        if key in {"duplicate_ids", "churn_rate"}
    }
    rows = sum(part.rows for part in parts)
    return DataReport(path, rows, time.monotonic() - started, missing, findings, figures)


def _collect(
    frame: pd.DataFrame,
    contract: Contract,
    part: validation.PartitionCheck,
    found: dict[_Key, list[tuple[int, str]]],
    examples: int,
) -> None:
    """Up to `examples` offending rows of each column and problem, with their file lines.

    The rules name a violation's first row only, so they are run again on a window of rows
    after the last one found (widened while it holds none), until each column has its few:
    only when there are problems, and on this chunk alone. Without its source file a frame's
    violations name their row (line = row + 2), turned into the file's line once found, by
    reading.file_line.
    """
    counts = {
        (result.rule.name, v.column, v.problem): v.count
        for result in part.results
        for v in result.violations
    }
    first_row = part.first_row
    last: dict[_Key, int] = {}  # the last offending table row found of each, in this chunk
    taken: dict[_Key, int] = {}
    bare = frame.copy(deep=False)
    bare.attrs = {k: v for k, v in frame.attrs.items() if k != SOURCE_PATH}

    def wanted(key: _Key) -> bool:
        return len(found.get(key, ())) < examples and taken.get(key, 0) < counts[key]

    window = _FIRST_WINDOW
    end = first_row + len(frame)
    while pending := [key for key in counts if wanted(key)]:
        start = min(last.get(key, first_row - 1) + 1 for key in pending)
        stop = min(start + window, end)
        rows = validation.check_partition(
            bare.iloc[start - first_row : stop - first_row], contract, start
        )
        before = sum(taken.values())
        for result in rows.results:
            for violation in result.violations:
                key = (result.rule.name, violation.column, violation.problem)
                row = violation.line - 2
                if key in counts and wanted(key) and row > last.get(key, first_row - 1):
                    found.setdefault(key, []).append((file_line(frame, row), violation.value))
                    last[key] = row
                    taken[key] = taken.get(key, 0) + 1
        if sum(taken.values()) == before:
            if stop == end:  # the rules found no more: never loop on
                break
            window *= 8

"""Reading and cleaning the customer export, failing loudly on anything it cannot trust.

Every problem is reported with the column, the offending value and the line of the file
(line 1 is the header, a quoted newline counts as the line break it is), because the person
fixing an export needs to find the row. Nothing else of the file's content ever appears in a
message: a file dropped by mistake (a credentials file, say) must not be echoed into logs.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import pandas as pd

from churn_assets.ml import schema
from churn_assets.ml.limits import DEFAULT_MAX_LINE_BYTES, MAX_ID_CHARS

#: File line of data row 0: line 1 is the header.
_FIRST_DATA_LINE = 2
#: `DataFrame.attrs` key carrying the source file's SHA-256 from reading to the split, so the
#: model version can be tagged with the exact file it was trained on.
SOURCE_SHA256 = "source_sha256"
#: `DataFrame.attrs` key of the file a frame was read from, to turn a row into its file line.
SOURCE_PATH = "source_path"
#: How much of an offending value a message shows.
_SHOWN_CHARS = 40
_SCAN_CHUNK = 1 << 22


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


def blank_as_none(value: object) -> object:
    """The API's reading of a blank TotalCharges: text of only spaces is "not billed yet",
    as cleaning reads the export's blank cell (stripped, then empty)."""
    return None if isinstance(value, str) and not value.strip() else value


#: Columns read as categories of their raw text: a handful of distinct values each, so a
#: million rows cost a byte each instead of a Python string each (about 60 bytes), and cleaning
#: checks and converts each distinct value once. The ID and TotalCharges are nearly unique.
_TEXT_COLUMNS = (schema.ID_COLUMN, "TotalCharges")
_READ_DTYPES = {c: ("str" if c in _TEXT_COLUMNS else "category") for c in schema.RAW_COLUMNS}


def read_customer_csv(
    path: Path,
    sha256: str | None,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    follow_symlinks: bool = True,
) -> pd.DataFrame:
    """Read the export as text exactly as written, so cleaning sees every quirk.

    Low-cardinality columns come back as categoricals whose categories are that raw text.
    Lines longer than `max_line_bytes` are refused before pandas sees them. Every failure is a
    CustomerDataError naming the file and line; `follow_symlinks=False` (landing extracts)
    refuses a symbolic link instead of reading its target. `sha256=None` hashes the file in
    the same pass as the line check, instead of a caller reading it once more to hash it.
    """
    with open_regular(path, follow_symlinks) as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise CustomerDataError(f"customer file {path} is empty: expected a header and rows")
        digest = hashlib.sha256() if sha256 is None else None
        _check_line_lengths(handle, path, max_line_bytes, digest)
        if digest is not None:
            sha256 = digest.hexdigest()
        try:
            handle.seek(0)
            header = pd.read_csv(handle, nrows=0, encoding="utf-8").columns
            dtypes = {c: _READ_DTYPES.get(c, "str") for c in header}
            handle.seek(0)
            frame = pd.read_csv(
                handle, dtype=dtypes, keep_default_na=False, na_filter=False, encoding="utf-8"
            )
        except UnicodeDecodeError:
            raise CustomerDataError(
                f"customer file {path} is not UTF-8: {_bad_encoding(handle)}; save it as UTF-8"
            ) from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as error:
            raise CustomerDataError(
                f"customer file {path} is not valid CSV: {_malformed(handle, error)}"
            ) from None
    if frame.empty:
        raise CustomerDataError(f"customer file {path} has a header but no customer rows")
    frame.attrs[SOURCE_SHA256] = sha256
    frame.attrs[SOURCE_PATH] = str(path)
    return frame


@contextmanager
def open_regular(path: Path, follow_symlinks: bool) -> Iterator[BinaryIO]:
    """The file opened for reading, refused unless it is a regular file.

    A FIFO or device named like an export would block or never end; with `follow_symlinks`
    off, O_NOFOLLOW refuses a link even if one replaced the file after it was inspected.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise CustomerDataError(
            f"customer file {path} does not exist: set CHURN_DATA_PATH or generate one with "
            f"`churn generate-data --out {path}`"
        ) from None
    except OSError as error:
        if not follow_symlinks and Path(path).is_symlink():
            raise CustomerDataError(
                f"customer file {path} is a symbolic link; links are never followed"
            ) from None
        raise CustomerDataError(f"customer file {path} cannot be read: {error.strerror}") from None
    handle = os.fdopen(descriptor, "rb")
    with handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise CustomerDataError(f"customer file {path} is not a regular file")
        os.set_blocking(descriptor, True)
        yield handle


def _check_line_lengths(
    handle: BinaryIO, path: Path, limit: int, digest: hashlib._Hash | None
) -> None:
    """Refuse the first line longer than `limit` bytes, without holding more than a chunk;
    `digest`, when given, is fed every chunk read."""
    line, length = 1, 0
    while chunk := handle.read(_SCAN_CHUNK):
        if digest is not None:
            digest.update(chunk)
        breaks = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == ord("\n"))
        if len(breaks) == 0:
            length += len(chunk)
            if length > limit:
                break
            continue
        # lengths of the line continued from the last chunk, then of each line after it
        lengths = np.diff(breaks, prepend=-1)
        lengths[0] += length
        over = np.flatnonzero(lengths > limit + 1)  # +1: the line break itself
        if len(over):
            line += int(over[0])
            length = limit + 1
            break
        line += len(breaks)
        length = len(chunk) - int(breaks[-1]) - 1
        if length > limit:
            break
    if length > limit:
        raise CustomerDataError(
            f"customer file {path}: line {line} is longer than the limit of {limit} bytes "
            "(CHURN_MAX_LINE_BYTES); an export's row is a few hundred"
        )


def _bad_encoding(handle: BinaryIO) -> str:
    """Where the first byte that is not UTF-8 is: its line and column."""
    handle.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, offset_in_line = 1, 0
    while chunk := handle.read(_SCAN_CHUNK):
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as error:
            before = chunk[: error.start]
            breaks = before.count(b"\n")
            column = (
                len(before) - before.rfind(b"\n") if breaks else offset_in_line + len(before) + 1
            )
            return f"line {line + breaks}, byte {column} is {chunk[error.start]:#04x}"
        breaks = chunk.count(b"\n")
        line += breaks
        offset_in_line = (
            len(chunk) - chunk.rfind(b"\n") - 1 if breaks else offset_in_line + len(chunk)
        )
    return "a byte sequence is cut off at the end of the file"


def _records(handle: BinaryIO) -> Iterator[tuple[int, list[str]]]:
    """Each CSV record with the file line it starts on, quoted newlines counted as lines."""
    handle.seek(0)
    reader = csv.reader((line.decode("utf-8", "replace") for line in handle), strict=False)
    first = 1
    for record in reader:
        yield first, record
        first = reader.line_num + 1


def _malformed(handle: BinaryIO, error: Exception) -> str:
    """The first record whose field count differs from the header's, else pandas' reason."""
    try:
        records = _records(handle)
        _, header = next(records)
        for line, record in records:
            if record and len(record) != len(header):
                return (
                    f"line {line} has {len(record)} field(s) where the header (line 1) has "
                    f"{len(header)}"
                )
    except (csv.Error, StopIteration):
        pass
    # pandas' own reasons name rows and positions, never content
    reason = re.sub(r"\s+", " ", str(error)).strip()
    return reason[:200] or type(error).__name__


def file_line(frame: pd.DataFrame, position: int) -> int:
    """The line of the source file row `position` of a frame read from it starts on.

    Counting records would be off by one for each quoted newline above the row, so the file is
    read again: only on the way to an error message, never on the happy path.
    """
    source = frame.attrs.get(SOURCE_PATH)
    if source:
        try:
            with open_regular(Path(source), follow_symlinks=False) as handle:
                for index, (line, _) in enumerate(_records(handle)):
                    if index == position + 1:  # record 0 is the header
                        return line
        except (CustomerDataError, OSError, csv.Error):
            pass
    return position + _FIRST_DATA_LINE


def shown(value: object) -> str:
    """A value as a message shows it: its repr, cut to a readable length."""
    text = str(value)
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"


def _example(raw: pd.DataFrame, mask: np.ndarray | pd.Series) -> str:
    """Where the first offending row is: 'line N' of the file."""
    return f"line {file_line(raw, int(np.flatnonzero(np.asarray(mask))[0]))}"


def _fail(raw: pd.DataFrame, column: str, mask: pd.Series, problem: str) -> None:
    count = int(np.asarray(mask).sum())
    value = raw[column].iloc[int(np.flatnonzero(np.asarray(mask))[0])]
    raise CustomerDataError(
        f"column {column!r}: {count} row(s) {problem}, e.g. {shown(value)} at {_example(raw, mask)}"
    )


def check_columns(raw: pd.DataFrame) -> list[str]:
    """The export's columns the frame lacks (raised as an error) and its extra ones.

    A snapshot's history columns are not extra: they are the snapshot's own.
    """
    if raw.empty:
        raise CustomerDataError("customer data has no rows")
    missing = [c for c in schema.RAW_COLUMNS if c not in raw.columns]
    if missing:
        # The header's other names are not echoed: they may be anything but an export's.
        raise CustomerDataError(
            f"missing required column(s) {', '.join(map(repr, missing))}; the header "
            f"(line 1) has {len(raw.columns)} column(s), "
            f"{len(schema.RAW_COLUMNS) - len(missing)} of the {len(schema.RAW_COLUMNS)} required"
        )
    known = (*schema.RAW_COLUMNS, *schema.HISTORY_COLUMNS)
    return [c for c in raw.columns if c not in known]


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
    extra = check_columns(raw)
    text = {c: _stripped(raw[c]) for c in schema.RAW_COLUMNS}
    ids = text[schema.ID_COLUMN]
    _reject(raw, schema.ID_COLUMN, ids == "", "are blank")
    _reject(
        raw,
        schema.ID_COLUMN,
        ids.str.len() > MAX_ID_CHARS,
        f"are longer than {MAX_ID_CHARS} characters",
    )

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
    # a snapshot's history (first seen, churn date) travels with its customers
    for column in schema.HISTORY_COLUMNS:
        if column in raw.columns:
            cleaned[column] = _stripped(raw[column]).to_numpy()

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

"""Reading the customer export exactly as written, failing loudly on anything it cannot read.

Every problem is reported with the column, the offending value and the line of the file
(line 1 is the header, a quoted newline counts as the line break it is), because the person
fixing an export needs to find the row. Nothing else of the file's content ever appears in a
message: a file dropped by mistake (a credentials file, say) must not be echoed into logs.
Only the data contract's columns are read; judging their values is `validation`'s job.
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from churn_assets.ml.data.contract import ROW_ID, Contract
from churn_assets.ml.data.limits import DEFAULT_MAX_LINE_BYTES

#: File line of data row 0: line 1 is the header.
_FIRST_DATA_LINE = 2
#: `DataFrame.attrs` key carrying the source file's SHA-256 from reading to the split, so the
#: model version can be tagged with the exact file it was trained on.
SOURCE_SHA256 = "source_sha256"
#: `DataFrame.attrs` key of the file a frame was read from, to turn a row into its file line.
SOURCE_PATH = "source_path"
#: How much of an offending value a message shows.
_SHOWN_CHARS = 40
#: `DataFrame.attrs` key of the export's columns the contract does not declare (not read).
EXTRA_COLUMNS = "extra_columns"
_SCAN_CHUNK = 1 << 22


class CustomerDataError(ValueError):
    """The export cannot be used as training data; the message says where and why."""


def blank_as_none(value: object) -> object:
    """The API's reading of a blank number: text of only spaces is blank, as cleaning reads
    the export's blank cell (stripped, then empty)."""
    return None if isinstance(value, str) and not value.strip() else value


def read_dtype(contract: Contract, column: str) -> str:
    """Text for the ID and for numbers with decimals (nearly unique), categories otherwise.

    A category holds a handful of distinct values, so a million rows cost a byte each instead
    of a Python string each (about 60 bytes), and cleaning checks each distinct value once.
    """
    spec = contract.features.get(column)
    if column == contract.id_column or (spec is not None and spec.type == "number"):
        return "str"
    return "category"


def row_ids(frame: pd.DataFrame, contract: Contract) -> pd.Series:
    """Stable IDs for an export without one: a hash of the row's features and target, plus
    how many identical rows came before it, so equal rows stay distinct customers."""
    values = frame[[*contract.feature_columns, contract.target_column]].astype(str)
    hashed = pd.util.hash_pandas_object(values, index=False).to_numpy()
    repeat = pd.Series(hashed).groupby(hashed).cumcount().to_numpy()
    return pd.Series(
        [f"{h:016x}-{n}" for h, n in zip(hashed, repeat, strict=True)], index=frame.index
    )


def read_customer_csv(
    path: Path,
    sha256: str | None,
    contract: Contract,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    follow_symlinks: bool = True,
) -> pd.DataFrame:
    """Read the export as text exactly as written, so cleaning sees every quirk.

    Only the contract's columns are read, under the contract's names (`rename`); the rest,
    `drop` included, never reach memory and are listed in `attrs["extra_columns"]`.
    Low-cardinality columns come back as categoricals whose categories are that raw text.
    Lines longer than `max_line_bytes` are refused before pandas sees them. Every failure is a
    CustomerDataError naming the file and line; `follow_symlinks=False` (landing extracts)
    refuses a symbolic link instead of reading its target. `sha256=None` hashes the file in
    the same pass as the line check, instead of a caller reading it once more to hash it.
    """
    with open_export(
        path, contract, sha256, max_line_bytes=max_line_bytes, follow_symlinks=follow_symlinks
    ) as export:
        (frame,) = export.frames(None)
    return frame


@dataclass(frozen=True)
class Export:
    """An export whose bytes passed the file checks, ready to be parsed whole or in chunks."""

    path: Path
    handle: BinaryIO
    contract: Contract
    #: The file's SHA-256, known before a row is parsed.
    sha256: str
    header: list[str]
    #: The export's names of the columns read, and the contract's name of each.
    wanted: dict[str, str]

    def frames(self, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
        """The rows as frames of `chunk_rows` (None: one frame), indexed by row from 0.

        A contract without an ID is read whole: a row's stand-in ID counts the identical rows
        before it anywhere in the file.
        """
        contract = self.contract
        extra = [n for n in self.header if n not in self.wanted and n not in contract.drop]
        self.handle.seek(0)
        rows = 0
        with parse_errors(self.path, self.handle):
            parsed = pd.read_csv(
                self.handle,
                usecols=list(self.wanted),
                dtype={name: read_dtype(contract, c) for name, c in self.wanted.items()},
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8",
                chunksize=chunk_rows if contract.id is not None else None,
            )
            for chunk in [parsed] if isinstance(parsed, pd.DataFrame) else parsed:
                if chunk.empty:
                    continue
                frame = chunk.rename(columns=self.wanted)
                if contract.id is None:  # the header was checked: every column is there
                    frame.insert(0, ROW_ID, row_ids(frame, contract))
                frame.attrs[EXTRA_COLUMNS] = extra
                frame.attrs[SOURCE_SHA256] = self.sha256
                frame.attrs[SOURCE_PATH] = str(self.path)
                rows += len(frame)
                yield frame
        if not rows:
            raise CustomerDataError(f"customer file {self.path} has a header but no customer rows")


@dataclass(frozen=True)
class CheckedCsv:
    """A CSV file whose bytes passed the checks, open at its start."""

    handle: BinaryIO
    sha256: str
    header: list[str]


@contextmanager
def checked_csv(
    path: Path,
    sha256: str | None = None,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    follow_symlinks: bool = True,
    what: str = "customer file",
) -> Iterator[CheckedCsv]:
    """The file opened and its bytes checked (empty, line lengths, field counts, UTF-8 header:
    in blocks, so a file of any size); `what` is how messages name it. `sha256=None` hashes
    the file in the same pass as the line check."""
    with open_regular(path, follow_symlinks, what) as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise CustomerDataError(f"{what} {path} is empty: expected a header and rows")
        digest = hashlib.sha256() if sha256 is None else None
        _refuse_lone_carriage_returns(handle, path, what)
        _check_line_lengths(handle, path, max_line_bytes, digest, what)
        # pandas does not count the fields of a row whose extra or missing ones it would not
        # read: they are counted here
        _check_field_counts(handle, path, what)
        with parse_errors(path, handle, what):
            handle.seek(0)
            header = [str(c) for c in pd.read_csv(handle, nrows=0, encoding="utf-8").columns]
        handle.seek(0)
        yield CheckedCsv(handle, digest.hexdigest() if digest is not None else str(sha256), header)


@contextmanager
def open_export(
    path: Path,
    contract: Contract,
    sha256: str | None = None,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    follow_symlinks: bool = True,
) -> Iterator[Export]:
    """The export opened, its bytes checked (`checked_csv`), and its header held to the
    contract. A caller that hashed the file already passes its hash."""
    with checked_csv(
        path, sha256, max_line_bytes=max_line_bytes, follow_symlinks=follow_symlinks
    ) as checked:
        header = checked.header
        try:
            require_columns(contract, set(header), renamed=False)
        except CustomerDataError as error:
            raise CustomerDataError(f"customer file {path}: {error}") from None
        wanted = {
            name: contract.rename.get(name, name)
            for name in header
            if contract.rename.get(name, name) in contract.columns
        }
        yield Export(path, checked.handle, contract, checked.sha256, header, wanted)


@contextmanager
def parse_errors(path: Path, handle: BinaryIO, what: str = "customer file") -> Iterator[None]:
    """pandas' and the codec's errors while parsing, as the line and reason a person fixes."""
    try:
        yield
    except UnicodeDecodeError:
        raise CustomerDataError(
            f"{what} {path} is not UTF-8: {_bad_encoding(handle)}; save it as UTF-8"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as error:
        raise CustomerDataError(
            f"{what} {path} is not valid CSV: {_malformed(handle, error)}"
        ) from None


@contextmanager
def open_regular(
    path: Path, follow_symlinks: bool, what: str = "customer file"
) -> Iterator[BinaryIO]:
    """The file opened for reading, refused unless it is a regular file.

    A FIFO or device named like an export would block or never end; with `follow_symlinks`
    off, O_NOFOLLOW refuses a link even if one replaced the file after it was inspected.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        if what != "customer file":
            raise CustomerDataError(f"{what} {path} does not exist") from None
        raise CustomerDataError(
            f"customer file {path} does not exist: set CHURN_DATA_PATH or generate one with "
            f"`churn generate-data --out {path}`"
        ) from None
    except OSError as error:
        if not follow_symlinks and Path(path).is_symlink():
            raise CustomerDataError(
                f"{what} {path} is a symbolic link; links are never followed"
            ) from None
        raise CustomerDataError(f"{what} {path} cannot be read: {error.strerror}") from None
    handle = os.fdopen(descriptor, "rb")
    with handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise CustomerDataError(f"{what} {path} is not a regular file")
        os.set_blocking(descriptor, True)
        yield handle


def _refuse_lone_carriage_returns(handle: BinaryIO, path: Path, what: str) -> None:
    """Refuse a file whose lines end in a carriage return alone (classic Mac): pandas splits its
    rows there, but the line and field checks count line feeds, so they would see one line."""
    handle.seek(0)
    head = handle.read(_SCAN_CHUNK)
    handle.seek(0)
    first = head.split(b"\n", 1)[0].removesuffix(b"\r")
    if b"\r" in first:
        raise CustomerDataError(
            f"{what} {path}: its lines end in a carriage return alone (classic Mac line "
            "endings); save it with LF or CRLF line endings"
        )


def _check_line_lengths(
    handle: BinaryIO,
    path: Path,
    limit: int,
    digest: hashlib._Hash | None,
    what: str = "customer file",
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
            f"{what} {path}: line {line} is longer than the limit of {limit} bytes "
            "(CHURN_MAX_LINE_BYTES); an export's row is a few hundred"
        )


class _FieldCounter:
    """Counts each CSV record's fields chunk by chunk, on the positions of its delimiters.

    A comma or line break counts only outside quotes (an even number of quote characters
    before it), so quoted commas and newlines are text, as CSV has them; a blank line is no
    record, as pandas skips it. Only positions are kept (commas, line breaks, quotes), so a
    chunk costs three byte comparisons and a few searches, not a pass per byte in Python.
    """

    def __init__(self, path: Path, what: str = "customer file") -> None:
        self.path = path
        self.what = what
        self.parity = 0  # quote characters so far, mod 2
        self.commas = 0  # of the record being read, before this chunk
        self.length = 0  # its bytes there, line breaks and carriage returns aside
        self.line = 1  # the file line it starts on
        self.lines = 0  # line breaks before this chunk
        self.expected: int | None = None
        self.last_byte = 0  # of the chunk before: a "\r\n" may straddle two

    def feed(self, chunk: bytes) -> None:
        data = np.frombuffer(chunk, dtype=np.uint8)
        commas = np.flatnonzero(data == ord(","))
        newlines = np.flatnonzero(data == ord("\n"))
        quotes = np.flatnonzero(data == ord('"'))
        ends = newlines
        if len(quotes) or self.parity:
            commas = commas[(np.searchsorted(quotes, commas) + self.parity) % 2 == 0]
            ends = newlines[(np.searchsorted(quotes, newlines) + self.parity) % 2 == 0]
        if len(ends):
            fields = np.diff(np.searchsorted(commas, ends), prepend=0) + 1
            starts = np.concatenate(([-1], ends[:-1]))
            before = np.where(ends > 0, data[np.maximum(ends - 1, 0)], self.last_byte)
            lengths = ends - starts - 1 - (before == ord("\r"))
            fields[0] += self.commas
            lengths[0] += self.length
            lines = np.concatenate(
                ([self.line], self.lines + np.searchsorted(newlines, ends[:-1]) + 2)
            )
            self._judge(fields, lengths, lines)
            last = int(ends[-1])
            self.commas = int(len(commas) - np.searchsorted(commas, last))
            self.length = len(chunk) - last - 1
            self.line = self.lines + int(np.searchsorted(newlines, last)) + 2
        else:
            self.commas += len(commas)
            self.length += len(chunk)
        self.parity = (self.parity + len(quotes)) % 2
        self.lines += len(newlines)
        self.last_byte = int(data[-1])

    def finish(self) -> None:
        """The last record, when no line break follows it."""
        self._judge(np.array([self.commas + 1]), np.array([self.length]), np.array([self.line]))

    def _judge(self, fields: np.ndarray, lengths: np.ndarray, starts: np.ndarray) -> None:
        present = np.flatnonzero(lengths > 0)
        if not len(present):
            return
        if self.expected is None:
            self.expected = int(fields[present[0]])
        wrong = present[fields[present] != self.expected]
        if len(wrong):
            first = int(wrong[0])
            raise CustomerDataError(
                f"{self.what} {self.path} is not valid CSV: line {int(starts[first])} has "
                f"{int(fields[first])} field(s) where the header (line 1) has {self.expected}"
            )


def _check_field_counts(handle: BinaryIO, path: Path, what: str = "customer file") -> None:
    """Refuse the first record whose field count differs from the header's."""
    handle.seek(0)
    counter = _FieldCounter(path, what)
    while chunk := handle.read(_SCAN_CHUNK):
        counter.feed(chunk)
    counter.finish()


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


def header_names(handle: BinaryIO) -> list[str]:
    """The header's names as written: pandas renames a repeated one (`a`, `a.1`), which hides
    that the file names a column twice."""
    _, names = next(_records(handle), (1, []))
    handle.seek(0)
    return [name.lstrip("\ufeff") for name in names]


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
                # pandas skips blank lines: so does the count
                records = (line for line, fields in _records(handle) if fields)
                for index, line in enumerate(records):
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


def missing_columns(contract: Contract, present: set[str], *, renamed: bool) -> list[str]:
    """The contract's columns not `present`, as the export names them (the header a person
    fixes); `present` holds contract names when `renamed`, the header's otherwise."""
    return [
        export
        for column, export in contract.export_names.items()
        if (column if renamed else export) not in present
    ]


def require_columns(contract: Contract, present: set[str], *, renamed: bool) -> None:
    """Raise naming each missing required column. The header's other names are not echoed:
    they may be anything but an export's."""
    required = contract.export_names
    missing = missing_columns(contract, present, renamed=renamed)
    if missing:
        raise CustomerDataError(
            f"missing required column(s) {', '.join(map(repr, missing))}; the export has "
            f"{len(required) - len(missing)} of the {len(required)} the contract requires; if "
            "your export names them differently, map its names in the contract's `rename` "
            "(CHURN_CONTRACT_PATH), or draft a contract with `churn contract infer FILE`"
        )


def stripped(values: pd.Series) -> pd.Series:
    """Text without surrounding blanks, stripped once per distinct value.

    A categorical (an export as read) or a column of few distinct texts (a snapshot, read
    back as strings) comes back as a categorical, so every later check and conversion works
    per distinct value too; a nearly unique column (IDs) is stripped value by value.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes, texts = values.cat.codes.to_numpy(), values.cat.categories
    else:
        codes, texts = pd.factorize(values)
        if len(texts) > len(values) // 2:
            return values.astype(str).str.strip()
    stripped = pd.Index(texts).astype(str).str.strip()
    levels, position = np.unique(stripped.to_numpy(dtype=str), return_inverse=True)
    recoded = np.where(codes >= 0, position[codes], -1)
    return pd.Series(pd.Categorical.from_codes(recoded, levels), index=values.index)


def to_number(text: pd.Series) -> pd.Series:
    """Floats, NaN where the text is not a number; a categorical is parsed once per category."""
    if not isinstance(text.dtype, pd.CategoricalDtype):
        return pd.to_numeric(text, errors="coerce").astype(np.float64)
    parsed = pd.to_numeric(text.cat.categories, errors="coerce").to_numpy(dtype=np.float64)
    codes = text.cat.codes.to_numpy()
    return pd.Series(np.where(codes >= 0, parsed[codes], np.nan), index=text.index)


def mapped_levels(values: pd.Series, mapping: dict[str, str] | None) -> pd.Series:
    """Category codes as the contract's `map` translates them (unmapped codes as they are)."""
    if not mapping:
        return values
    # on a categorical, map() runs once per distinct code
    return values.map(functools.partial(_mapped, mapping))


def _mapped(mapping: dict[str, str], code: str) -> str:
    return mapping.get(code, code)

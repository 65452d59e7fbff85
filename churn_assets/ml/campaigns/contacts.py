"""What the retention team did with a campaign's offers: contact logs, recorded for good.

The CRM (or the team) drops a contact log into the landing folder's `contacts/` subfolder: a
CSV with the header `customer,campaign,contacted,accepted` (`accepted` optional), one row per
customer worked, `contacted` and `accepted` as yes/no (also true/false, y/n, 1/0; `accepted`
blank when not known). A log is held to the extracts' rules: a link, anything but a regular
file, a file over CHURN_MAX_EXTRACT_MB or a line over CHURN_MAX_LINE_BYTES is refused before
it is parsed; every value is checked; a problem is named by file, line, column and value
(never other content); a log with one bad row is refused whole, so nothing of it is recorded.

A row must name a kept campaign and a customer that campaign assigned an arm (treatment,
control or explore: one it held belongs to another campaign); `accepted` needs `contacted`.
A control customer contacted is recorded, and counted: it breaks the protocol, which the
measure by assignment survives (it compares the groups as drawn) and per protocol leaves out.

A recorded log is `<scores folder>/campaigns/contacts/<SHA-256>.parquet`: one atomic file,
named by the content it was read from, so the same bytes recorded twice are recorded once,
with where it came from and when in its own metadata. Logs are read in the order they were
recorded; a later log's row for a campaign and customer replaces an earlier one (a corrected
log wins). A campaign's treated customers missing from every log count as not contacted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churn_assets.ml.campaigns import ledger
from churn_assets.ml.campaigns.assignment import Arm
from churn_assets.ml.data.landing import inspect_landed
from churn_assets.ml.data.limits import MAX_ID_CHARS, ExtractLimits
from churn_assets.ml.data.reading import (
    SOURCE_PATH,
    CustomerDataError,
    checked_csv,
    file_line,
    header_names,
    parse_errors,
    shown,
)
from churn_assets.ml.files import replacing

#: The landing folder's subfolder contact logs are dropped into.
LANDING_SUBFOLDER = "contacts"
WHAT = "contact log"
REQUIRED = ("customer", "campaign", "contacted")
COLUMNS = (*REQUIRED, "accepted")
_FOLDER = "contacts"
_TERMS_KEY = b"churn.contact_log"
_YES = frozenset({"yes", "y", "true", "1"})
_NO = frozenset({"no", "n", "false", "0"})


@dataclass(frozen=True)
class RecordedLog:
    """A recorded contact log: where it came from and what it holds."""

    source: str
    sha256: str
    recorded_at: str
    rows: int
    #: rows per campaign
    campaigns: dict[str, int]
    contacted: int
    accepted: int
    #: control customers contacted: against the protocol
    control_contacted: int


def folder_of(scores_folder: Path) -> Path:
    return scores_folder / ledger.FOLDER / _FOLDER


def recorded(scores_folder: Path) -> list[RecordedLog]:
    """Every recorded log, in the order it was recorded."""
    found = []
    for path in folder_of(scores_folder).glob("*.parquet"):
        terms = _terms(path)
        if terms is not None:
            found.append(terms)
    return sorted(found, key=lambda log: (log.recorded_at, log.sha256))


def _after_the_latest(scores_folder: Path) -> str:
    """Now, or just after the latest recorded log when a clock says otherwise: the order logs
    correct each other in is the order they were recorded, whatever the clocks."""
    now = datetime.now(UTC)
    kept = recorded(scores_folder)
    if kept:
        latest = datetime.fromisoformat(kept[-1].recorded_at)
        now = max(now, latest + timedelta(microseconds=1))
    return now.isoformat(timespec="microseconds")


def _terms(path: Path) -> RecordedLog | None:
    """A kept log's terms; None for a file this module did not write whole (a crash before
    the rename leaves none, but a disk can lose one): it is left out, and recorded anew when
    its log lands again."""
    try:
        metadata = pq.read_metadata(path).metadata or {}
        return RecordedLog(**json.loads(metadata[_TERMS_KEY]))
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError):
        return None


def record(
    path: Path,
    scores_folder: Path,
    limits: ExtractLimits | None = None,
    expected_sha256: str | None = None,
) -> tuple[RecordedLog, bool]:
    """Check the log at `path` and keep it; returns it and whether it was new (the same
    content recorded before is not recorded again). CustomerDataError names what is wrong."""
    limits = limits or ExtractLimits()
    try:
        rows, sha256 = _read(path, limits, expected_sha256)
        kept = {c.id: c for c in ledger.campaigns(scores_folder)}
        terms = _check(rows, kept, scores_folder, path.name, sha256)
    except CustomerDataError as error:
        raise CustomerDataError(f"{error}; nothing of it was recorded") from error
    target = folder_of(scores_folder) / f"{sha256}.parquet"
    before = _terms(target) if target.exists() else None
    if before is not None:
        return before, False
    table = pa.Table.from_pandas(rows[list(COLUMNS)], preserve_index=False)
    table = table.replace_schema_metadata({_TERMS_KEY: json.dumps(asdict(terms)).encode()})
    with replacing(target) as temporary:
        pq.write_table(table, temporary)
    return terms, True


def of_campaign(
    scores_folder: Path, campaign: str, logs: list[RecordedLog] | None = None
) -> pd.DataFrame | None:
    """The campaign's customers in any recorded log (the latest row of each), indexed by
    customer ID: `contacted` (bool) and `accepted` (True, False, or NA when not known); None
    when no log mentions the campaign. `logs`: `recorded(scores_folder)`, when the caller read
    it already."""
    frames = []
    for log in recorded(scores_folder) if logs is None else logs:
        if campaign in log.campaigns:
            table = pq.read_table(
                folder_of(scores_folder) / f"{log.sha256}.parquet",
                filters=[("campaign", "=", campaign)],
            )
            frames.append(table.to_pandas())
    if not frames:
        return None
    rows = pd.concat(frames, ignore_index=True).drop_duplicates("customer", keep="last")
    return rows.set_index("customer")[["contacted", "accepted"]]


def _read(
    path: Path, limits: ExtractLimits, expected_sha256: str | None
) -> tuple[pd.DataFrame, str]:
    """The log's rows as text, after the file checks; its SHA-256."""
    try:
        inspect_landed(path, path.parent, limits, WHAT)
    except FileNotFoundError:
        raise CustomerDataError(f"{WHAT} {path.name} does not exist") from None
    except OSError as error:
        raise CustomerDataError(
            f"{WHAT} {path.name} cannot be read: {error.strerror or type(error).__name__}"
        ) from None
    with checked_csv(
        path, max_line_bytes=limits.max_line_bytes, follow_symlinks=False, what=WHAT
    ) as checked:
        if expected_sha256 and checked.sha256 != expected_sha256:
            raise CustomerDataError(
                f"{WHAT} {path.name}: its content changed since it was picked up; it will be "
                "picked up again once it stops changing"
            )
        written = header_names(checked.handle)
        repeated = sorted({c.strip() for c in written if written.count(c) > 1})
        if repeated:
            raise CustomerDataError(
                f"{WHAT} {path.name}: column(s) {', '.join(map(repr, repeated))} appear more than "
                "once in the header; which one counts would be a guess"
            )
        missing = [c for c in REQUIRED if c not in checked.header]
        if missing:
            raise CustomerDataError(
                f"{WHAT} {path.name}: missing column(s) {', '.join(map(repr, missing))}; a "
                f"contact log's header is {','.join(COLUMNS)} (accepted optional)"
            )
        with parse_errors(path, checked.handle, WHAT):
            rows = pd.read_csv(
                checked.handle,
                usecols=[c for c in COLUMNS if c in checked.header],
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8",
            )
    if rows.empty:
        raise CustomerDataError(f"{WHAT} {path.name} has a header but no rows")
    rows.attrs[SOURCE_PATH] = str(path)
    return rows, checked.sha256


def _flags(rows: pd.DataFrame, column: str, name: str, blank_ok: bool) -> pd.Series:
    """yes/no text as booleans (NA for a blank where allowed), read once per distinct text."""
    codes, levels = pd.factorize(rows[column])
    words = pd.Index(levels).astype(str).str.strip().str.lower()
    text = pd.Series(words.to_numpy()[codes], index=rows.index)
    known = text.isin(_YES | _NO) | (text.eq("") if blank_ok else False)
    _refuse_first(
        rows,
        ~known,
        column,
        name,
        lambda value: (
            f"{shown(value)} is not yes or no" + ("" if blank_ok else " (a blank is not allowed)")
        ),
    )
    flags = pd.array([True if w in _YES else (False if w in _NO else pd.NA) for w in words])
    return pd.Series(pd.array(flags, dtype="boolean")[codes], index=rows.index)


def _refuse_first(
    rows: pd.DataFrame, bad: pd.Series, column: str, name: str, why: Callable[[object], str]
) -> None:
    """Raise naming the first row where `bad` holds, its line, column and value."""
    positions = bad.to_numpy().nonzero()[0]
    if len(positions):
        first = int(positions[0])
        more = f" ({len(positions) - 1} more row(s) like it)" if len(positions) > 1 else ""
        raise CustomerDataError(
            f"{WHAT} {name}: line {file_line(rows, first)}, column {column}: "
            f"{why(rows[column].iloc[first])}{more}"
        )


def _check(
    rows: pd.DataFrame,
    kept: dict[str, ledger.Campaign],
    scores_folder: Path,
    name: str,
    sha256: str,
) -> RecordedLog:
    """Hold every row to the rules (module docstring) and normalize it in place."""
    rows["customer"] = rows["customer"].str.strip()
    rows["campaign"] = rows["campaign"].str.strip()
    _refuse_first(
        rows, rows["customer"].eq(""), "customer", name, lambda _: "the customer is blank"
    )
    _refuse_first(
        rows,
        rows["customer"].str.len() > MAX_ID_CHARS,
        "customer",
        name,
        lambda value: f"{shown(value)} is longer than {MAX_ID_CHARS} characters, as no ID is",
    )
    _refuse_first(
        rows,
        ~rows["campaign"].isin(kept),
        "campaign",
        name,
        lambda value: (
            f"no kept campaign is called {shown(value)}"
            + (f" (the latest is {list(kept)[-1]!r})" if kept else " (no campaign is kept yet)")
        ),
    )
    contacted_flags = _flags(rows, "contacted", name, blank_ok=False)
    accepted_flags = (
        _flags(rows, "accepted", name, blank_ok=True)
        if "accepted" in rows
        else pd.Series(pd.NA, index=rows.index, dtype="boolean")
    )
    _refuse_first(
        rows,
        (accepted_flags.fillna(False) & ~contacted_flags).astype(bool),
        "accepted",
        name,
        lambda value: f"{shown(value)} for a customer not contacted",
    )
    rows["contacted"], rows["accepted"] = contacted_flags, accepted_flags
    arms = pd.Series(pd.NA, index=rows.index, dtype="object")
    for campaign in rows["campaign"].unique():
        assignments = ledger.read_assignments(scores_folder, campaign)
        ids = assignments.iloc[:, 0].astype(str).str.strip()
        own = assignments.loc[assignments["arm"] != Arm.held.value, "arm"]
        arm_of = pd.Series(own.to_numpy(), index=ids[own.index].to_numpy())
        inside = rows["campaign"] == campaign
        arms[inside] = rows.loc[inside, "customer"].map(arm_of)
    _refuse_first(
        rows,
        arms.isna(),
        "customer",
        name,
        lambda value: f"customer {shown(value)} was not assigned by the row's campaign",
    )
    contacted = rows["contacted"].to_numpy(dtype=bool)
    return RecordedLog(
        source=name,
        sha256=sha256,
        recorded_at=_after_the_latest(scores_folder),
        rows=len(rows),
        campaigns={str(k): int(v) for k, v in rows["campaign"].value_counts().items()},
        contacted=int(contacted.sum()),
        accepted=int(rows["accepted"].fillna(False).astype(bool).sum()),
        control_contacted=int((contacted & (arms == Arm.control.value).to_numpy()).sum()),
    )

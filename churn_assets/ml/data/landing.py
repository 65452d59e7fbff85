"""The landing folder: which extracts are ready, and how one joins the training snapshot.

The billing system drops customer extracts (CSV files in the export's format) into the landing
folder. An extract is an upsert keyed by customerID: a customer in the extract replaces the
snapshot's row for that ID (the extract is newer, and within one extract the last row wins),
a new ID is added, and customers the extract does not mention stay as they are. An extract is
validated completely before anything is written; the merged table becomes a new snapshot and
only then the current one (see `churn_assets.ml.data.snapshots`), so a bad or interrupted merge
leaves the current snapshot as it was, and a wrong one can be undone with `churn snapshots
restore`. If another writer (another machine's merge) moves the pointer while an extract is
merged, the merge is built again on the new current snapshot: neither undoes the other.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from churn_assets.ml.data import history
from churn_assets.ml.data.cleaning import clean_customers
from churn_assets.ml.data.contract import Contract
from churn_assets.ml.data.limits import ExtractLimits
from churn_assets.ml.data.reading import (
    EXTRA_COLUMNS,
    CustomerDataError,
    open_regular,
    read_customer_csv,
)
from churn_assets.ml.data.snapshots import SHORT_ID, Pointer, SnapshotInfo, SnapshotStore
from churn_assets.ml.files import stream_sha256

#: Hashes the cursor remembers; far more than a weekly drop needs, small enough for a cursor.
_SEEN_LIMIT = 1000


class RefusedExtractError(CustomerDataError):
    """A file in the landing folder that is never read: a link, not a file, too large."""


@dataclass(frozen=True)
class LandedFile:
    """An extract in the landing folder as the sensor saw it."""

    path: Path
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class LandingCursor:
    """What the sensor keeps between ticks (and daemon restarts) in its cursor.

    `seen` holds the content hashes already handed to a run, so a file never triggers twice,
    not even under another name; `hashes` caches each file's hash by (size, mtime) so an
    unchanged file is not read again on every tick.
    """

    seen: list[str] = field(default_factory=list)
    hashes: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    #: Files refused, by name -> (size, mtime): reported once, again only if they change.
    refused: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str | None) -> LandingCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            seen=list(data.get("seen", [])),
            hashes={name: (int(s), int(m), str(h)) for name, (s, m, h) in data["hashes"].items()},
            refused={name: (int(s), int(m)) for name, (s, m) in data.get("refused", {}).items()},
        )

    def to_json(self) -> str:
        return json.dumps(
            {"seen": self.seen, "hashes": self.hashes, "refused": self.refused}, sort_keys=True
        )

    def mark_seen(self, sha256: str) -> None:
        if sha256 not in self.seen:
            self.seen = [*self.seen, sha256][-_SEEN_LIMIT:]


def is_candidate(path: Path) -> bool:
    """A CSV name, not hidden and not a temporary name a copy in progress would use.

    Only the name is looked at: what the name points to is `inspect_landed`'s to judge.
    """
    return path.suffix.lower() == ".csv" and not path.name.startswith((".", "~"))


@dataclass(frozen=True)
class RefusedFile:
    """A candidate file the sensor will not merge, and why (never its content)."""

    name: str
    reason: str
    size: int
    mtime_ns: int


@dataclass
class LandingScan:
    """One look at the landing folder: what is ready to merge, and what was refused."""

    ready: list[LandedFile] = field(default_factory=list)
    #: Refused files not reported before (the cursor remembers the ones that were).
    newly_refused: list[RefusedFile] = field(default_factory=list)


def inspect_landed(
    path: Path, folder: Path, limits: ExtractLimits, what: str = "extract"
) -> os.stat_result:
    """The file's own status, if it may be read at all; RefusedExtractError otherwise.

    Links are refused rather than followed: a link can point anywhere the daemon can read
    (a credentials file, another customer base), and whoever can write to the landing folder
    must not be able to make the platform read it. The same goes for a name that resolves
    outside the folder, for anything but a regular file (a FIFO would block a read forever)
    and for a file over the size limit. `what` is how messages name the file.
    """
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise RefusedExtractError(
            f"{what} {path.name} is a symbolic link; links are never followed"
        )
    if not stat.S_ISREG(info.st_mode):
        raise RefusedExtractError(f"{what} {path.name} is not a regular file")
    if path.resolve().parent != folder.resolve():
        raise RefusedExtractError(f"{what} {path.name} resolves outside the landing folder")
    if info.st_size > limits.max_file_bytes:
        raise RefusedExtractError(
            f"{what} {path.name} is {info.st_size:,} bytes, over the limit of "
            f"{limits.max_file_bytes:,} (CHURN_MAX_EXTRACT_MB)"
        )
    return info


def _landed_sha256(path: Path) -> str:
    """The content hash, read without following a link swapped in since the inspection."""
    with open_regular(path, follow_symlinks=False) as handle:
        return stream_sha256(handle)


def ready_extracts(
    folder: Path,
    cursor: LandingCursor,
    settle_s: float,
    now: float | None = None,
    limits: ExtractLimits | None = None,
    what: str = "extract",
) -> LandingScan:
    """Extracts not yet seen and unchanged for `settle_s` seconds, oldest first.

    A file still being copied keeps changing its modification time, so the settle time keeps
    it out until the copy is over. A file that cannot be used (see `inspect_landed`, or one
    that cannot be read) is refused on its own: it never stops the files beside it. The
    cursor's hash cache is refreshed for the files read. `what` is how messages name a file.
    """
    scan = LandingScan()
    if not folder.is_dir():
        return scan
    limits = limits or ExtractLimits()
    now = time.time() if now is None else now
    present: dict[str, tuple[int, int, str]] = {}
    refused: dict[str, tuple[int, int]] = {}
    for path in sorted(folder.iterdir()):
        if not is_candidate(path):
            continue
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue  # moved away since the listing: nothing to report
        if now - info.st_mtime < settle_s:
            continue
        try:
            inspect_landed(path, folder, limits, what)
            cached = cursor.hashes.get(path.name)
            if cached and cached[:2] == (info.st_size, info.st_mtime_ns):
                sha256 = cached[2]
            else:
                sha256 = _landed_sha256(path)
        except (OSError, CustomerDataError) as error:
            reason = (
                str(error)
                if isinstance(error, CustomerDataError)
                else f"{what} {path.name} cannot be read: {error.strerror or type(error).__name__}"
            )
            key = (info.st_size, info.st_mtime_ns)
            refused[path.name] = key
            if cursor.refused.get(path.name) != key:
                scan.newly_refused.append(RefusedFile(path.name, reason, *key))
            continue
        present[path.name] = (info.st_size, info.st_mtime_ns, sha256)
        if sha256 not in cursor.seen and all(sha256 != f.sha256 for f in scan.ready):
            scan.ready.append(LandedFile(path, info.st_size, info.st_mtime_ns, sha256))
    cursor.hashes = present
    cursor.refused = refused
    scan.ready.sort(key=lambda landed: (landed.mtime_ns, landed.path.name))
    return scan


@dataclass(frozen=True)
class MergeReport:
    """What one extract changed in the snapshot, for the asset's metadata."""

    extract: str
    extract_sha256: str
    extract_kind: str
    as_of: str
    extract_rows: int
    new_customers: int
    updated_customers: int
    #: Churns this extract recorded: rows with Churn = Yes, and (full) customers missing.
    churned_customers: int
    returned_customers: int
    duplicate_ids_in_extract: int
    extra_columns: list[str]
    snapshot_rows_before: int
    snapshot_rows_after: int
    snapshot: SnapshotInfo


@dataclass(frozen=True)
class Extract:
    """An extract that passed validation: its rows as written and as cleaned."""

    raw: pd.DataFrame
    cleaned: pd.DataFrame
    sha256: str


def read_extract(
    path: Path,
    contract: Contract,
    expected_sha256: str | None = None,
    limits: ExtractLimits | None = None,
) -> Extract:
    """The extract's rows as written, after checking they clean; errors name the file.

    Raises CustomerDataError when the file may not be read (`inspect_landed`), changed since
    `expected_sha256` was taken, or has a row that would not clean (the message names the
    column, the value and the line).
    """
    limits = limits or ExtractLimits()
    try:
        inspect_landed(path, path.parent, limits)
        sha256 = _landed_sha256(path)
    except FileNotFoundError:
        sha256 = ""
    except OSError as error:
        raise CustomerDataError(
            f"extract {path.name} cannot be read: {error.strerror or type(error).__name__}"
        ) from None
    if expected_sha256 and sha256 != expected_sha256:
        raise CustomerDataError(
            f"extract {path.name}: its content changed since it was picked up "
            f"(SHA-256 {expected_sha256[:12]}... then, {sha256[:12] or 'missing'}... now); "
            "it will be picked up again once it stops changing"
        )
    try:
        if not sha256:
            raise CustomerDataError(f"extract {path} does not exist")
        raw = read_customer_csv(
            path, sha256, contract, max_line_bytes=limits.max_line_bytes, follow_symlinks=False
        )
        # An extract may be a handful of customers who all stayed; training data may not.
        cleaned, _ = clean_customers(raw, contract, require_both_classes=False)
    except CustomerDataError as error:
        raise CustomerDataError(f"extract {path.name} rejected: {error}") from error
    return Extract(raw, cleaned, sha256)


def merge_extract(
    store: SnapshotStore,
    extract: Path,
    expected_sha256: str | None = None,
    limits: ExtractLimits | None = None,
    seed: Path | None = None,
    terms: history.ExtractTerms | None = None,
) -> tuple[MergeReport, pd.DataFrame]:
    """Upsert the extract into the current snapshot by customer ID; the extract's rows win.

    The result is a new snapshot and the pointer moves to it; the one before stays in the
    store. `terms` say whether the extract is full or delta and its date (by default what its
    name says; see churn_assets.ml.data.history), which decides the churns it records. A `seed`
    file (CHURN_DATA_PATH) whose content is new is imported first, and with no snapshot at all
    the extract alone starts one, so a new installation can be fed from the landing folder.
    Columns the contract does not declare are not read. An extract dated more than the
    store's `max_ahead_days` after today is refused. Returns what changed and the extract's
    cleaned rows (what drift is measured on). Any CustomerDataError says that the current
    snapshot was not changed, which is true of every one; so does a SnapshotError when other
    writers kept moving the pointer (SnapshotStore.retry_moves).
    """
    limits = limits or ExtractLimits()
    terms = terms or history.terms_of(extract, history.ExtractKind.delta)
    try:
        return _merge(store, extract, expected_sha256, limits, seed, terms)
    except CustomerDataError as error:
        current = store.current_id()
        unchanged = (
            "no snapshot was written"
            if current is None
            else f"the current snapshot {current[:SHORT_ID]} was not changed"
        )
        raise CustomerDataError(f"{error}; {unchanged}") from error


def _merge(
    store: SnapshotStore,
    extract: Path,
    expected_sha256: str | None,
    limits: ExtractLimits,
    seed: Path | None,
    terms: history.ExtractTerms,
) -> tuple[MergeReport, pd.DataFrame]:
    contract = store.contract
    validated = read_extract(extract, contract, expected_sha256, limits)
    raw = validated.raw
    extra = list(raw.attrs.get(EXTRA_COLUMNS, []))
    incoming = raw[list(contract.columns)]
    ids = incoming[contract.id_column].str.strip()
    latest = incoming.loc[~ids.duplicated(keep="last")]
    if seed:
        store.sync_seed(seed, limits)

    def attempt(pointer: Pointer) -> tuple[history.Upsert, SnapshotInfo]:
        # Built on the pointer as read, and moved only if no other writer moved it since
        # (another machine's merge, say): otherwise this runs again on the new current
        # snapshot, so neither merge undoes the other.
        parent = None if pointer.id is None else store.info(pointer.id)
        if parent is not None and terms.as_of.isoformat() < parent.as_of:
            raise CustomerDataError(
                f"extract {extract.name} is dated {terms.as_of}, before the current snapshot's "
                f"{parent.as_of}: history does not go backwards (restore an older snapshot "
                "first to replay from there)"
            )
        current: Iterable[pd.DataFrame] = []
        if parent is not None:
            store.verified(parent.id)  # its bytes checked once against its name
            # read a partition at a time as the new snapshot is written
            current = (
                store.read_partition(parent.id, index)
                for index in range(store.partitions(parent.id))
            )
        upsert = history.Upsert(current, latest, terms, contract)
        snapshot = store.write(
            upsert.table(),
            kind="merge",
            source=extract.name,
            source_sha256=validated.sha256,
            parent=None if parent is None else parent.id,
            as_of=terms.as_of,
        )
        store.point_to(snapshot.id, f"merged {extract.name}", replacing=pointer)
        return upsert, snapshot

    upsert, snapshot = store.retry_moves(f"merge of extract {extract.name}", attempt)
    report = MergeReport(
        extract=str(extract),
        extract_sha256=validated.sha256,
        extract_kind=terms.kind.value,
        as_of=terms.as_of.isoformat(),
        extract_rows=len(incoming),
        new_customers=upsert.new_customers,
        updated_customers=upsert.updated_customers,
        churned_customers=upsert.churned,
        returned_customers=upsert.returned,
        duplicate_ids_in_extract=len(incoming) - len(latest),
        extra_columns=extra,
        snapshot_rows_before=upsert.rows_before,
        snapshot_rows_after=snapshot.rows,
        snapshot=snapshot,
    )
    return report, validated.cleaned

"""Training snapshots: every state of the customer table kept, the current one a pointer.

A snapshot is the customer table (the export's columns, as the export wrote them) stored once
as Parquet under the SHA-256 of those bytes and never written again; `CURRENT.json` names the
one training reads. A merge writes a new snapshot and moves the pointer, `restore` moves it
back, so a valid but wrong extract is undone by moving a pointer, and the exact bytes any model
version was trained on stay readable for as long as a registered version names them (pruning
never removes those).

The store is a folder of the artifact store: <state>/snapshots by default, CHURN_SNAPSHOT_URI
(e.g. s3://churn/snapshots on MinIO) in the deployed stack. pyarrow's filesystems give both
one interface, and Parquet keeps a 100-million-row table a fraction of its CSV size.

The file CHURN_DATA_PATH names seeds the store: whenever its content is not the content last
imported (a new installation, `churn fetch-data`, a file replaced by hand), it becomes a new
snapshot and the current one. Extracts then build on whatever is current.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from churn_assets.ml import storage
from churn_assets.ml.data import history
from churn_assets.ml.data.cleaning import check_columns
from churn_assets.ml.data.contract import HISTORY_COLUMNS, Contract
from churn_assets.ml.data.limits import ExtractLimits
from churn_assets.ml.data.reading import (
    SOURCE_SHA256,
    CustomerDataError,
    read_customer_csv,
    read_dtype,
)
from churn_assets.ml.settings import ChurnSettings

#: Characters of a snapshot's SHA-256 shown and accepted as its name (as git shortens commits).
SHORT_ID = 12
_CURRENT = "CURRENT.json"
_SEED = "SEED.json"


class SnapshotError(RuntimeError):
    """A snapshot that is not in the store, or a name that matches more than one."""


@dataclass(frozen=True)
class SnapshotInfo:
    """What `churn snapshots` lists: where a snapshot came from and what it holds."""

    id: str
    created_at: str
    rows: int
    churn_rate: float
    kind: str  # seed (CHURN_DATA_PATH), merge (a landed extract) or file (a run's own file)
    source: str
    source_sha256: str
    parent: str | None
    #: The date the snapshot's rows are true on (ISO): its extract's date.
    as_of: str
    #: The digest of the data contract its columns follow ("" before contracts existed).
    contract: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID]


def columns(contract: Contract) -> tuple[str, ...]:
    """A snapshot's columns: the contract's, then each customer's history."""
    return (*contract.columns, *HISTORY_COLUMNS)


def read_export(path: Path, limits: ExtractLimits, contract: Contract) -> pd.DataFrame:
    """A whole export (the seed, or a file a run trains on), hashed as it is read.

    Only the columns are checked here; values are the data checks' to judge, downstream.
    """
    frame = read_customer_csv(path, None, contract, max_line_bytes=limits.max_line_bytes)
    try:
        check_columns(frame, contract)
    except CustomerDataError as error:
        raise CustomerDataError(f"customer file {path}: {error}") from None
    return frame


def churn_rate(frame: pd.DataFrame, contract: Contract) -> float:
    """Share of rows whose target is a positive code, as the export writes it."""
    return float(history.churned(frame, contract).mean()) if len(frame) else 0.0


def _text(values: pd.Series) -> pa.Array:
    """A column as the strings `values.astype(str)` gives, without building them in pandas.

    A categorical (an export as read) is decoded by Arrow from its codes: a Python string per
    row for every column cost 12 GB at ten million customers; the bytes written are the same.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = [str(c) for c in values.cat.categories]
        codes = values.cat.codes.to_numpy().astype(np.int32)
        if (codes < 0).any():  # a missing value, which astype(str) writes as "nan"
            codes = np.where(codes < 0, len(categories), codes)
            categories.append(str(np.nan))
        dictionary = pa.array(categories, pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(codes), dictionary).cast(pa.string())
    return pa.array(values.astype(str).to_numpy(dtype=object), pa.string())


class SnapshotStore:
    """One owner for every write of snapshots and the pointer; readers only read."""

    def __init__(self, where: storage.Location, lock_path: Path, contract: Contract) -> None:
        #: What new snapshots hold; reading an older one under another contract is the data
        #: checks' to refuse, column by column.
        self.contract = contract
        self._where = where
        self._lock_path = lock_path
        self.uri = where.uri

    @classmethod
    def from_settings(cls, settings: ChurnSettings) -> SnapshotStore:
        where = storage.location(settings.snapshot_uri, settings)
        lock = settings.local_state / "snapshots.lock"
        return cls(where, lock, settings.contract())

    # -- reading ---------------------------------------------------------------------------

    def _read_json(self, path: str) -> dict[str, object] | None:
        if not self._where.exists(path):
            return None
        with self._where.filesystem.open_input_stream(path) as stream:
            return dict(json.loads(stream.read()))

    def data_uri(self, snapshot_id: str) -> str:
        """Where a snapshot's Parquet file lives, as MLflow records the dataset's source."""
        return f"{self.uri}/data/{snapshot_id}.parquet"

    def info(self, snapshot_id: str) -> SnapshotInfo:
        data = self._read_json(self._where.path("meta", f"{snapshot_id}.json"))
        if data is None:
            raise SnapshotError(f"snapshot {snapshot_id[:SHORT_ID]} is not in {self.uri}")
        return SnapshotInfo(**data)  # type: ignore[arg-type]

    def current_id(self) -> str | None:
        pointer = self._read_json(self._where.path(_CURRENT))
        return None if pointer is None else str(pointer["id"])

    def current(self) -> SnapshotInfo | None:
        snapshot_id = self.current_id()
        return None if snapshot_id is None else self.info(snapshot_id)

    def all(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first."""
        selector = pafs.FileSelector(self._where.path("meta"), allow_not_found=True)
        names = [
            f.base_name.removesuffix(".json")
            for f in self._where.filesystem.get_file_info(selector)
            if f.is_file and f.base_name.endswith(".json")
        ]
        return sorted((self.info(name) for name in names), key=lambda s: (s.created_at, s.id))

    def resolve(self, name: str) -> SnapshotInfo:
        """The snapshot a full ID or a prefix of at least 6 characters names."""
        name = name.strip().lower()
        matches = [s for s in self.all() if len(name) >= 6 and s.id.startswith(name)]
        if len(matches) != 1:
            found = "no snapshot" if not matches else f"{len(matches)} snapshots"
            raise SnapshotError(
                f"{found} in {self.uri} match {name[:64]!r} (give 6 or more characters of an "
                "ID that `churn snapshots` lists)"
            )
        return matches[0]

    def read(
        self,
        snapshot_id: str,
        *,
        categorical: bool = False,
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """The snapshot's rows and history, all columns strings as the export wrote them.

        The bytes are checked against the name, so a file damaged in storage is an error,
        never training data. `categorical` reads the low-cardinality columns as categoricals,
        as an export is read (read_customer_csv): a byte per value instead of a Python string,
        0.2 GB instead of 1.4 GB per million customers, for readers that do not write values
        into the frame (a merge does, so it reads plain strings). `columns` reads only those
        (Parquet is by column): the churn dates of ten million customers take seconds, the
        whole table half a minute and 10 GB.
        """
        path = self._where.path("data", f"{snapshot_id}.parquet")
        if not self._where.exists(path):
            raise SnapshotError(f"snapshot {snapshot_id[:SHORT_ID]} has no data in {self.uri}")
        with self._where.filesystem.open_input_stream(path) as stream:
            data = stream.read()
        if hashlib.sha256(data).hexdigest() != snapshot_id:
            raise SnapshotError(
                f"snapshot {snapshot_id[:SHORT_ID]} in {self.uri} does not match its SHA-256: "
                "the stored file was changed or damaged"
            )
        schema = pq.read_schema(pa.BufferReader(data))
        categories = [
            c
            for c in schema.names
            if categorical
            and c not in HISTORY_COLUMNS
            and read_dtype(self.contract, c) == "category"
        ]
        table = pq.read_table(pa.BufferReader(data), columns=columns, read_dictionary=categories)
        frame = table.to_pandas()
        text = [c for c in frame.columns if c not in categories]
        frame[text] = frame[text].astype(str)
        frame.attrs[SOURCE_SHA256] = snapshot_id
        return frame

    # -- writing (under the lock) ----------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time, whichever process: a merge reads the pointer, then moves it."""
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._remove_leftovers()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _remove_leftovers(self) -> None:
        """Every writer holds the lock, so a temporary file seen now was left by a kill."""
        for folder in ("data", "meta", ""):
            selector = pafs.FileSelector(
                self._where.path(folder) if folder else self._where.root, allow_not_found=True
            )
            for found in self._where.filesystem.get_file_info(selector):
                if found.is_file and found.base_name.endswith(".tmp"):
                    self._where.filesystem.delete_file(found.path)

    def _write(self, path: str, data: bytes) -> None:
        with (
            self._where.writing(path) as temporary,
            self._where.filesystem.open_output_stream(temporary) as stream,
        ):
            stream.write(data)

    def write(
        self,
        frame: pd.DataFrame,
        *,
        kind: str,
        source: str,
        source_sha256: str,
        parent: str | None,
        as_of: date,
    ) -> SnapshotInfo:
        """Store `frame` and return its entry; the pointer stays where it is.

        A frame without history columns (an export read as it is) starts its history on
        `as_of`. The same content gives the same ID, so writing it again changes nothing and
        keeps the first entry.
        """
        if not set(HISTORY_COLUMNS) <= set(frame.columns):
            frame = history.start_history(frame, as_of, self.contract)
        names = columns(self.contract)
        # One string type and no pandas metadata: the bytes depend on the values and the date
        # alone, not on how the frame in memory happened to hold them. The date is part of
        # the content: the same customers a week later are a new point in their history.
        strings = pa.schema([(column, pa.string()) for column in names])
        arrow = pa.Table.from_arrays([_text(frame[column]) for column in names], schema=strings)
        dated = arrow.replace_schema_metadata({"churn.as_of": as_of.isoformat()})
        buffer = io.BytesIO()
        pq.write_table(dated, buffer, compression="zstd")
        data = buffer.getvalue()
        snapshot_id = hashlib.sha256(data).hexdigest()
        meta = self._where.path("meta", f"{snapshot_id}.json")
        if self._where.exists(meta):
            return self.info(snapshot_id)
        self._write(self._where.path("data", f"{snapshot_id}.parquet"), data)
        info = SnapshotInfo(
            id=snapshot_id,
            created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            rows=len(frame),
            churn_rate=churn_rate(frame, self.contract),
            kind=kind,
            source=source,
            source_sha256=source_sha256,
            parent=parent,
            as_of=as_of.isoformat(),
            contract=self.contract.digest,
        )
        # The entry goes last: a snapshot is listed only once its data is complete.
        self._write(meta, json.dumps(asdict(info), indent=2).encode())
        return info

    def point_to(self, snapshot_id: str, reason: str) -> None:
        """Make `snapshot_id` the one training reads."""
        self.info(snapshot_id)  # refuses a name that is not in the store
        pointer = {
            "id": snapshot_id,
            "moved_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "reason": reason,
        }
        self._write(self._where.path(_CURRENT), json.dumps(pointer, indent=2).encode())

    def sync_seed(self, seed: Path, limits: ExtractLimits) -> SnapshotInfo | None:
        """The current snapshot, after importing the seed file if its content is new.

        The seed's size and modification time are remembered with its hash, so an unchanged
        seed is not read again on every run. Call it holding the lock.
        """
        current = self.current()
        if not seed.is_file():
            return current
        status = seed.stat()
        last = self._read_json(self._where.path(_SEED)) or {}
        # a new contract reads the same file differently: the seed is imported again
        seen = (status.st_size, status.st_mtime_ns, self.contract.digest)
        if (
            current is not None
            and (
                last.get("size"),
                last.get("mtime_ns"),
                last.get("contract"),
            )
            == seen
        ):
            return current
        frame = read_export(seed, limits, self.contract)
        seed_sha256 = str(frame.attrs[SOURCE_SHA256])
        changed = (seed_sha256, self.contract.digest) != (last.get("sha256"), last.get("contract"))
        if current is None or changed:
            current = self.write(
                frame,
                kind="seed",
                source=str(seed),
                source_sha256=seed_sha256,
                parent=None if current is None else current.id,
                as_of=history.terms_of(seed, history.ExtractKind.full).as_of,
            )
            self.point_to(current.id, f"seed {seed} changed")
        record = {
            "size": status.st_size,
            "mtime_ns": status.st_mtime_ns,
            "sha256": seed_sha256,
            "contract": self.contract.digest,
        }
        self._write(self._where.path(_SEED), json.dumps(record).encode())
        return current

    def _kept(self, snapshot_id: str) -> SnapshotInfo | None:
        try:
            return self.info(snapshot_id)
        except SnapshotError:
            return None

    def lineage(
        self, snapshot_id: str, known: Mapping[str, SnapshotInfo] | None = None
    ) -> list[SnapshotInfo]:
        """The snapshot and those it was built on, oldest first, back to the first one kept.

        `known` (every entry, as `all` read them) saves reading each entry again.
        """
        find = self._kept if known is None else known.get
        chain = []
        info = find(snapshot_id)
        while info is not None:
            chain.append(info)
            info = None if info.parent is None else find(info.parent)  # None: pruned
        return chain[::-1]

    def prune(self, keep: int, in_use: Iterable[str]) -> list[SnapshotInfo]:
        """Delete snapshots beyond the `keep` newest that nothing needs; returns what went.

        Needed: the current snapshot, and every snapshot a registered model version names
        together with the ones it was built on (a point-in-time version was trained on its
        whole lineage), so `churn reproduce` keeps working for every version in the registry.
        Takes the writers' lock itself, as a restore does.
        """
        with self.locked():
            snapshots = self.all()
            known = {s.id: s for s in snapshots}
            protected = {self.current_id() or ""}
            for snapshot_id in in_use:
                protected |= {s.id for s in self.lineage(snapshot_id, known)}
            newest = {s.id for s in snapshots[-keep:]} if keep > 0 else set()
            removed = [s for s in snapshots if s.id not in protected and s.id not in newest]
            for snapshot in removed:
                # the entry first: a snapshot half-deleted is no longer listed
                self._where.filesystem.delete_file(self._where.path("meta", f"{snapshot.id}.json"))
                self._where.filesystem.delete_file(
                    self._where.path("data", f"{snapshot.id}.parquet")
                )
        return removed


def restore(store: SnapshotStore, name: str) -> tuple[str | None, SnapshotInfo]:
    """Move the pointer to the snapshot `name` names; returns the one it left and the new."""
    with store.locked():
        target = store.resolve(name)
        previous = store.current_id()
        if previous != target.id:
            store.point_to(target.id, f"restored from {(previous or 'none')[:SHORT_ID]}")
    return previous, target

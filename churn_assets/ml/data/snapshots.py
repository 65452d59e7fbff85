"""Training snapshots: every state of the customer table kept, the current one a pointer.

A snapshot is the customer table (the export's columns, as the export wrote them) stored once
as Parquet under the SHA-256 of those bytes and never written again; `CURRENT.json` names the
one training reads. A merge writes a new snapshot and moves the pointer, `restore` moves it
back (once the snapshot's bytes match its name), so a valid but wrong extract is undone by
moving a pointer, and the exact bytes any model version was trained on stay readable for as
long as a registered version names them (pruning never removes those).

Writers share no lock: CI and a cluster may write one store from machines and state folders of
their own. The pointer moves by compare-and-set on the store itself (storage.replace_versioned):
a merge remembers the pointer it built on and moves it only if it is unchanged, else builds
again on the new current snapshot, so no writer's move silently undoes another's. Every ID read
from the store (the pointer, an entry, its parent) must be a SHA-256 before it names a file.

The store is a folder of the artifact store: <state>/snapshots by default, CHURN_SNAPSHOT_URI
(e.g. s3://churn/snapshots on MinIO) in the deployed stack. pyarrow's filesystems give both
one interface, and Parquet keeps a 100-million-row table a fraction of its CSV size. The file's
row groups are the snapshot's partitions: it is written from chunks and read back (by a Dask
worker, say) one partition at a time, so no process needs the whole table in memory.

The file CHURN_DATA_PATH names seeds the store: whenever its content is not the content last
imported (a new installation, `churn fetch-data`, a file replaced by hand), it becomes a new
snapshot and the current one. Extracts then build on whatever is current.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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
    Export,
    open_export,
    read_dtype,
)
from churn_assets.ml.files import stream_sha256

#: Rows per partition of a snapshot: a Parquet row group, the unit a reader or a Dask worker
#: takes at a time. pyarrow's own default, so a snapshot written in chunks has, byte for byte,
#: the file (and so the ID) it has when written whole, as every snapshot before chunks had.
PARTITION_ROWS = 1 << 20
_HASH_BLOCK = 1 << 24
#: Characters of a snapshot's SHA-256 shown and accepted as its name (as git shortens commits).
SHORT_ID = 12
_CURRENT = "CURRENT.json"
_SEED = "SEED.json"
_ID = re.compile(r"[0-9a-f]{64}")
#: How many times a pointer move is tried while other writers' moves overtake it.
MOVE_ATTEMPTS = 5
#: Seconds after which a temporary file in the store is a killed writer's leftover: a write in
#: progress keeps changing its file (and on S3 it appears only complete, just before its move).
LEFTOVER_AGE_S = 3600.0

T = TypeVar("T")


class SnapshotError(RuntimeError):
    """A snapshot that is not in the store, a name that matches more than one, or a file of
    the store that is not what the store writes."""


class PointerMovedError(SnapshotError):
    """Another writer moved the pointer since it was read; this move was not made."""


@dataclass(frozen=True)
class Pointer:
    """CURRENT.json as read: the snapshot it names (None: none yet) and the version of the
    file, which a move must name to replace it."""

    id: str | None
    version: str | None


def _checked_id(value: object, source: str | None = None) -> str:
    """`value` if it is a snapshot ID; anything else (read from `source`, a file of the store)
    is refused before it names a file."""
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    shown = repr(str(value)[:80])
    if source is None:
        raise SnapshotError(f"{shown} is not a snapshot ID (64 lowercase hex digits)")
    raise SnapshotError(f"{source} names {shown}, not a snapshot ID (64 lowercase hex digits)")


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


def _checked(export: Export) -> Iterator[pd.DataFrame]:
    """The export's rows a partition at a time; only the columns are checked here, values
    are the data checks' to judge, downstream."""
    for frame in export.frames(PARTITION_ROWS):
        try:
            check_columns(frame, export.contract)
        except CustomerDataError as error:
            raise CustomerDataError(f"customer file {export.path}: {error}") from None
        yield frame


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


@dataclass
class _Counted:
    """What a snapshot's entry says of its rows, counted as its partitions go by."""

    rows: int = 0
    churners: int = 0


def _arrow(
    chunks: Iterable[pd.DataFrame],
    schema: pa.Schema,
    as_of: date,
    contract: Contract,
    counted: _Counted,
) -> Iterator[pa.Table]:
    """Each chunk as Arrow strings, a partition's rows at a time (a whole table converted at
    once would hold a second copy of it)."""
    for chunk in chunks:
        for start in range(0, len(chunk), PARTITION_ROWS):
            frame = chunk.iloc[start : start + PARTITION_ROWS]
            if not set(HISTORY_COLUMNS) <= set(frame.columns):
                frame = history.start_history(frame, as_of, contract)
            counted.rows += len(frame)
            counted.churners += int(history.churned(frame, contract).sum())
            yield pa.Table.from_arrays([_text(frame[c]) for c in schema.names], schema=schema)


def _partitions(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """The tables regrouped into PARTITION_ROWS rows each (the last may be short), so the row
    groups, and so the bytes, do not depend on how the table came in chunks."""
    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        pending.append(table)
        held += table.num_rows
        while held >= PARTITION_ROWS:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, PARTITION_ROWS)
            pending, held = [joined.slice(PARTITION_ROWS)], held - PARTITION_ROWS
    if held:
        yield pa.concat_tables(pending)


class _Hashing(io.RawIOBase):
    """A write-only file that passes bytes on to `stream` and hashes them: the snapshot's ID
    is known when its last byte is written, without reading the file again."""

    def __init__(self, stream: pa.NativeFile) -> None:
        super().__init__()
        self._stream = stream
        self._written = 0
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._stream.write(data)
        self.digest.update(data)
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written


class SnapshotStore:
    """One owner for every write of snapshots and the pointer; readers only read."""

    def __init__(self, where: storage.Location, contract: Contract, max_ahead_days: int) -> None:
        #: What new snapshots hold; reading an older one under another contract is the data
        #: checks' to refuse, column by column.
        self.contract = contract
        #: How many days after today a snapshot may be dated (CHURN_MAX_EXTRACT_AHEAD_DAYS).
        self.max_ahead_days = max_ahead_days
        self._where = where
        self.uri = where.uri

    @classmethod
    def reader(cls, where: storage.Location, contract: Contract) -> SnapshotStore:
        """The store at `where` for reading snapshots (a Dask worker's): it lands none, so no
        limit on how far ahead a snapshot may be dated applies."""
        return cls(where, contract, max_ahead_days=0)

    # -- reading ---------------------------------------------------------------------------

    def _parsed(self, path: str, data: bytes) -> dict[str, object]:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise SnapshotError(f"{self._where.uri_of(path)} is not the JSON object it should be")
        return parsed

    def _read_json(self, path: str) -> dict[str, object] | None:
        if not self._where.exists(path):
            return None
        with self._where.filesystem.open_input_stream(path) as stream:
            return self._parsed(path, stream.read())

    def _file(self, folder: str, snapshot_id: str) -> str:
        """A snapshot's entry (meta) or data path; only an ID makes one."""
        extension = "json" if folder == "meta" else "parquet"
        return self._where.path(folder, f"{_checked_id(snapshot_id)}.{extension}")

    def data_uri(self, snapshot_id: str) -> str:
        """Where a snapshot's Parquet file lives, as MLflow records the dataset's source."""
        return f"{self.uri}/data/{_checked_id(snapshot_id)}.parquet"

    def info(self, snapshot_id: str) -> SnapshotInfo:
        path = self._file("meta", snapshot_id)
        data = self._read_json(path)
        if data is None:
            raise SnapshotError(f"snapshot {snapshot_id[:SHORT_ID]} is not in {self.uri}")
        source = self._where.uri_of(path)
        try:
            info = SnapshotInfo(**data)  # type: ignore[arg-type]
        except TypeError:
            raise SnapshotError(f"{source} does not hold a snapshot's entry") from None
        if _checked_id(info.id, source) != snapshot_id:
            raise SnapshotError(f"{source} holds the entry of another snapshot, {info.id[:12]}")
        if info.parent is not None:
            _checked_id(info.parent, source)
        return info

    def pointer(self) -> Pointer:
        """The pointer as it is now, with the version a move must replace."""
        path = self._where.path(_CURRENT)
        found = self._where.read_versioned(path)
        if found.data is None:
            return Pointer(None, None)
        record = self._parsed(path, found.data)
        if "id" in record and record["id"] is None:  # pruned while no snapshot was current
            return Pointer(None, found.version)
        return Pointer(_checked_id(record.get("id"), self._where.uri_of(path)), found.version)

    def current_id(self) -> str | None:
        return self.pointer().id

    def current(self) -> SnapshotInfo | None:
        snapshot_id = self.current_id()
        return None if snapshot_id is None else self.info(snapshot_id)

    def all(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first."""
        selector = pafs.FileSelector(self._where.path("meta"), allow_not_found=True)
        names = [
            _checked_id(f.base_name.removesuffix(".json"), self._where.uri_of(f.path))
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
        nonblank: str | None = None,
    ) -> pd.DataFrame:
        """The snapshot's rows and history, all columns strings as the export wrote them.

        The bytes are checked against the name, so a file damaged in storage is an error,
        never training data. `categorical` reads the low-cardinality columns as categoricals,
        as an export is read (read_customer_csv): a byte per value instead of a Python string,
        0.2 GB instead of 1.4 GB per million customers, for readers that do not write values
        into the frame (a merge does, so it reads plain strings). `columns` reads only those
        (Parquet is by column): the churn dates of ten million customers take seconds, the
        whole table half a minute and 10 GB. `nonblank` keeps only the rows where that column
        is not blank, filtered before any Python string is made (the churned customers of a
        hundred million, by their churn date).
        """
        path = self.verified(snapshot_id)
        return self._frame(path, snapshot_id, None, categorical, columns, nonblank)

    def verified(self, snapshot_id: str) -> str:
        """The snapshot's data path, once its bytes are checked against its name.

        Read in blocks, so checking a snapshot of any size takes a few megabytes of memory.
        """
        path = self._file("data", snapshot_id)
        if not self._where.exists(path):
            raise SnapshotError(f"snapshot {snapshot_id[:SHORT_ID]} has no data in {self.uri}")
        with self._where.filesystem.open_input_stream(path) as stream:
            digest = stream_sha256(stream, _HASH_BLOCK)
        if digest != snapshot_id:
            raise SnapshotError(
                f"snapshot {snapshot_id[:SHORT_ID]} in {self.uri} does not match its SHA-256: "
                "the stored file was changed or damaged"
            )
        return path

    def partitions(self, snapshot_id: str) -> int:
        """How many partitions (Parquet row groups of PARTITION_ROWS rows) a snapshot has."""
        path = self._file("data", snapshot_id)
        return int(pq.ParquetFile(path, filesystem=self._where.filesystem).num_row_groups)

    def read_partition(
        self,
        snapshot_id: str,
        index: int,
        *,
        categorical: bool = False,
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """One partition of a snapshot, as `read` gives the whole, its index continuing the
        rows before it; what a worker reads. Not checked against the name: `verified` is
        called once, by whoever hands the partitions out, not once per partition."""
        path = self._file("data", snapshot_id)
        return self._frame(path, snapshot_id, index, categorical, columns)

    def _frame(
        self,
        path: str,
        snapshot_id: str,
        index: int | None,
        categorical: bool,
        columns: list[str] | None,
        nonblank: str | None = None,
    ) -> pd.DataFrame:
        """The whole file (`index` None) or one row group, the index counting from the file's
        first row (from 0 when `nonblank` filters rows)."""
        schema = pq.read_schema(path, filesystem=self._where.filesystem)
        categories = [
            c
            for c in schema.names
            if categorical
            and c not in HISTORY_COLUMNS
            and read_dtype(self.contract, c) == "category"
        ]
        parquet = pq.ParquetFile(
            path, filesystem=self._where.filesystem, read_dictionary=categories
        )
        if index is None:
            table, start = parquet.read(columns=columns), 0
        else:
            table = parquet.read_row_group(index, columns=columns)
            start = sum(parquet.metadata.row_group(i).num_rows for i in range(index))
        if nonblank is not None:
            table, start = (
                table.filter(pc.not_equal(pc.utf8_trim_whitespace(table[nonblank]), "")),
                0,
            )
        frame = table.to_pandas()
        frame.index = pd.RangeIndex(start, start + len(frame))
        text = [c for c in frame.columns if c not in categories]
        frame[text] = frame[text].astype(str)
        frame.attrs[SOURCE_SHA256] = snapshot_id
        return frame

    # -- writing ---------------------------------------------------------------------------

    def _remove_leftovers(self) -> None:
        """Temporary files untouched for LEFTOVER_AGE_S, left by a killed writer; a younger
        one may be another writer's write in progress (writers share no lock)."""
        cutoff = time.time() - LEFTOVER_AGE_S
        for folder in ("data", "meta", ""):
            selector = pafs.FileSelector(
                self._where.path(folder) if folder else self._where.root, allow_not_found=True
            )
            for found in self._where.filesystem.get_file_info(selector):
                if (
                    found.is_file
                    and found.base_name.endswith(".tmp")
                    and found.mtime is not None
                    and found.mtime.timestamp() < cutoff
                ):
                    self._delete(found.path)  # unless another writer was first

    def _write(self, path: str, data: bytes) -> None:
        with (
            self._where.writing(path) as temporary,
            self._where.filesystem.open_output_stream(temporary) as stream,
        ):
            stream.write(data)

    def write(
        self,
        frames: pd.DataFrame | Iterable[pd.DataFrame],
        *,
        kind: str,
        source: str,
        source_sha256: str,
        parent: str | None,
        as_of: date,
    ) -> SnapshotInfo:
        """Store a table, whole or as consecutive chunks, and return its entry; the pointer
        stays where it is.

        Written a partition at a time, hashed as it goes: memory holds one partition whatever
        the table's size, and a table gives the same bytes, so the same ID, however it was
        chunked. A table without history columns (an export read as it is) starts its
        history on `as_of`. The same content gives the same ID, so writing it again changes
        nothing and keeps the first entry. A date more than `max_ahead_days` after today is
        refused (CustomerDataError) before anything is written.
        """
        history.check_not_ahead(
            f"extract {source}" if kind == "merge" else source, as_of, self.max_ahead_days
        )
        self._remove_leftovers()
        chunks = [frames] if isinstance(frames, pd.DataFrame) else frames
        names = columns(self.contract)
        # One string type and no pandas metadata: the bytes depend on the values and the date
        # alone, not on how the frame in memory happened to hold them. The date is part of
        # the content: the same customers a week later are a new point in their history.
        schema = pa.schema([(column, pa.string()) for column in names]).with_metadata(
            {"churn.as_of": as_of.isoformat()}
        )
        counted = _Counted()
        data = self._where.path("data")
        with (
            self._where.staging(data) as staged,
            self._where.filesystem.open_output_stream(staged.temporary) as stream,
        ):
            sink = _Hashing(stream)
            with pq.ParquetWriter(sink, schema, compression="zstd") as parquet:
                tables = _arrow(chunks, schema, as_of, self.contract, counted)
                for table in _partitions(tables):
                    parquet.write_table(table, row_group_size=PARTITION_ROWS)
            snapshot_id = sink.digest.hexdigest()
            known = self._where.exists(self._file("meta", snapshot_id))
            staged.name = None if known else f"{snapshot_id}.parquet"
        if known:
            return self.info(snapshot_id)
        info = SnapshotInfo(
            id=snapshot_id,
            created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            rows=counted.rows,
            churn_rate=counted.churners / counted.rows if counted.rows else 0.0,
            kind=kind,
            source=source,
            source_sha256=source_sha256,
            parent=parent,
            as_of=as_of.isoformat(),
            contract=self.contract.digest,
        )
        # The entry goes last: a snapshot is listed only once its data is complete.
        self._write(self._file("meta", snapshot_id), _entry(info))
        return info

    def write_export(
        self, path: Path, limits: ExtractLimits, *, kind: str, parent: str | None
    ) -> SnapshotInfo:
        """An export (a run's own file) stored as a snapshot, read a partition at a time."""
        with open_export(path, self.contract, max_line_bytes=limits.max_line_bytes) as export:
            return self.write(
                _checked(export),
                kind=kind,
                source=str(path.resolve()),
                source_sha256=export.sha256,
                parent=parent,
                as_of=history.terms_of(path, history.ExtractKind.full).as_of,
            )

    def point_to(self, snapshot_id: str, reason: str, *, replacing: Pointer) -> Pointer:
        """Make `snapshot_id` the one training reads, if the pointer is still `replacing`.

        Raises PointerMovedError, and moves nothing, if another writer moved it since.
        """
        self.info(snapshot_id)  # refuses a name that is not in the store
        return self._move(snapshot_id, reason, replacing)

    def _move(self, snapshot_id: str | None, reason: str, replacing: Pointer) -> Pointer:
        pointer = {
            "id": snapshot_id,
            "previous": replacing.id,
            "moved_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "reason": reason,
        }
        try:
            version = self._where.replace_versioned(
                self._where.path(_CURRENT),
                json.dumps(pointer, indent=2).encode(),
                replacing.version,
            )
        except storage.VersionConflictError:
            raise PointerMovedError(
                f"{_CURRENT} in {self.uri} was moved by another writer since it named "
                f"{(replacing.id or 'none')[:SHORT_ID]}; {(snapshot_id or 'none')[:SHORT_ID]} "
                "was not made current"
            ) from None
        return Pointer(snapshot_id, version)

    def retry_moves(self, what: str, attempt: Callable[[Pointer], T]) -> T:
        """`attempt` on the pointer as it is now, and again on the new one each time another
        writer's move overtakes its own (PointerMovedError), up to MOVE_ATTEMPTS times."""
        for _ in range(MOVE_ATTEMPTS):
            try:
                return attempt(self.pointer())
            except PointerMovedError:
                continue
        raise SnapshotError(
            f"{what}: other writers moved {_CURRENT} in {self.uri} each of the "
            f"{MOVE_ATTEMPTS} times it tried; it made nothing current (run it again)"
        )

    def sync_seed(self, seed: Path, limits: ExtractLimits) -> SnapshotInfo | None:
        """The current snapshot, after importing the seed file if its content is new.

        The seed's size and modification time are remembered with its hash, so an unchanged
        seed is not read again on every run.
        """
        return self.retry_moves(
            f"import of seed {seed.name}", lambda pointer: self._sync_seed(seed, limits, pointer)
        )

    def _sync_seed(
        self, seed: Path, limits: ExtractLimits, pointer: Pointer
    ) -> SnapshotInfo | None:
        current = None if pointer.id is None else self.info(pointer.id)
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
        with open_export(seed, self.contract, max_line_bytes=limits.max_line_bytes) as export:
            # hashed before a row is parsed: a touched but unchanged seed is not parsed at all
            seed_sha256 = export.sha256
            changed = (seed_sha256, self.contract.digest) != (
                last.get("sha256"),
                last.get("contract"),
            )
            if current is None or changed:
                current = self.write(
                    _checked(export),
                    kind="seed",
                    source=str(seed),
                    source_sha256=seed_sha256,
                    parent=None if current is None else current.id,
                    as_of=history.terms_of(seed, history.ExtractKind.full).as_of,
                )
                if current.id != pointer.id:
                    self.point_to(current.id, f"seed {seed} changed", replacing=pointer)
        record = {
            "size": status.st_size,
            "mtime_ns": status.st_mtime_ns,
            "sha256": seed_sha256,
            "contract": self.contract.digest,
        }
        self._write(self._where.path(_SEED), json.dumps(record).encode())
        return current

    def _kept(self, snapshot_id: str) -> SnapshotInfo | None:
        """The entry, or None if it was pruned; a damaged one is an error, not a pruning."""
        if not self._where.exists(self._file("meta", snapshot_id)):
            return None
        return self.info(snapshot_id)

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
        """Delete snapshots beyond the `keep` newest (1 or more) that nothing needs; returns
        what went.

        Needed: the current snapshot, and every snapshot a registered model version names
        together with the ones it was built on (a point-in-time version was trained on its
        whole lineage), so `churn reproduce` keeps working for every version in the registry.
        """
        if keep < 1:
            raise SnapshotError(
                f"cannot keep {keep} snapshots: keep 1 or more (the newest is always kept)"
            )
        needed = list(in_use)
        return self.retry_moves("prune", lambda pointer: self._prune(keep, needed, pointer))

    def _prune(self, keep: int, in_use: list[str], pointer: Pointer) -> list[SnapshotInfo]:
        snapshots = self.all()
        known = {s.id: s for s in snapshots}
        protected = {pointer.id or ""}
        for snapshot_id in in_use:
            protected |= {s.id for s in self.lineage(snapshot_id, known)}
        newest = {s.id for s in snapshots[-keep:]}
        removed = [s for s in snapshots if s.id not in protected and s.id not in newest]
        if not removed:
            return []
        # The entries first: a snapshot half-deleted is no longer listed, and no restore can
        # name it. Then the pointer is moved onto itself, which refuses every move made on a
        # pointer read before (a restore that resolved a removed snapshot tries again and
        # finds it gone); if a move came first, the entries are put back and pruning starts
        # over from the new pointer, before any data is gone.
        # Deleting what another pruning deleted first is no error.
        for snapshot in removed:
            self._delete(self._file("meta", snapshot.id))
        try:
            self._move(pointer.id, f"pruned {len(removed)} snapshot(s)", pointer)
        except PointerMovedError:
            for snapshot in removed:
                if self._where.exists(self._file("data", snapshot.id)):
                    self._write(self._file("meta", snapshot.id), _entry(snapshot))
            raise
        for snapshot in removed:
            if not self._where.exists(self._file("meta", snapshot.id)):  # not written again
                self._delete(self._file("data", snapshot.id))
        return removed

    def _delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._where.filesystem.delete_file(path)


def _entry(info: SnapshotInfo) -> bytes:
    return json.dumps(asdict(info), indent=2).encode()


def restore(store: SnapshotStore, name: str) -> tuple[str | None, SnapshotInfo]:
    """Move the pointer to the snapshot `name` names, once its bytes match its name; returns
    the one it left and the new.

    A merge landing meanwhile is not undone unseen: the move is made on the pointer it reads
    last, and the snapshot it leaves is the one returned.
    """
    target = store.resolve(name)
    try:
        store.verified(target.id)
    except SnapshotError as error:
        current = (store.current_id() or "none")[:SHORT_ID]
        raise SnapshotError(
            f"restore refused: {error}; the current snapshot stays {current}"
        ) from None

    def attempt(pointer: Pointer) -> str | None:
        if pointer.id != target.id:
            reason = f"restored from {(pointer.id or 'none')[:SHORT_ID]}"
            store.point_to(target.id, reason, replacing=pointer)
        return pointer.id

    return store.retry_moves(f"restore of {target.short_id}", attempt), target

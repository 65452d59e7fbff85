"""Tables handed from step to step by reference, and worked on a partition at a time.

`raw_customers` passes a SnapshotTable (where the snapshot is, its size), never its rows: the
data checks and cleaning each read the partitions they judge or clean, in their own process
or on the Dask workers a runner (churn_assets.ml.cluster.runners) spreads them over, so no
process holds the raw table whole. Cleaning writes each cleaned partition as a Parquet file
into the run's folder on the artifact store and passes on a CleanedTable: those files and what
makes them one table (the table's category levels, the IDs a later partition holds again),
so splitting and scoring read them a partition at a time too. The per-partition results merge
into exactly what one pass over the whole table gives (`validation.merge`,
`cleaning.merge_cleaned`, `splitting.merge_split`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churn_assets.ml import storage
from churn_assets.ml.data import cleaning, splitting, validation
from churn_assets.ml.data.contract import Contract
from churn_assets.ml.data.snapshots import SnapshotStore

if TYPE_CHECKING:
    from churn_assets.ml.cluster.runners import PartitionRunner

#: Opens a folder URI with the credentials of the process that calls it, so none travel with
#: a table to a Dask worker: a module-level function (pickled by its name), such as
#: `churn_assets.ml.stores.open_location`.
Opener = Callable[[str], storage.Location]


@dataclass(frozen=True)
class SnapshotTable:
    """A verified snapshot (its bytes matched its ID when the reference was made)."""

    uri: str
    snapshot_id: str
    rows: int
    partitions: int
    #: The contract it is read under (the run's, which may not be the environment's).
    contract: Contract
    #: How a process reading a partition opens `uri`.
    open_location: Opener

    @classmethod
    def of(cls, store: SnapshotStore, snapshot_id: str, open_location: Opener) -> SnapshotTable:
        store.verified(snapshot_id)
        info = store.info(snapshot_id)
        partitions = store.partitions(snapshot_id)
        return cls(store.uri, snapshot_id, info.rows, partitions, store.contract, open_location)

    def read_partition(self, index: int) -> pd.DataFrame:
        """Partition `index` as an export is read: low-cardinality columns categorical."""
        store = SnapshotStore.reader(self.open_location(self.uri), self.contract)
        return store.read_partition(self.snapshot_id, index, categorical=True)


def _check(index: int, table: SnapshotTable) -> validation.PartitionCheck:
    raw = table.read_partition(index)
    return validation.check_partition(raw, table.contract, first_row=int(raw.index[0]))


def validate_table(table: SnapshotTable, runner: PartitionRunner) -> list[validation.RuleResult]:
    """Every rule's verdict on the whole snapshot, judged a partition at a time."""
    parts = runner.map("validation", _check, range(table.partitions), table=table)
    return validation.merge(parts, table.contract)


@dataclass(frozen=True)
class CleanedTable:
    """A snapshot's customers cleaned: one Parquet file per snapshot partition in `uri`, and
    what makes the files one table, as `cleaning.clean_customers` of the whole would give."""

    #: The folder of the files (a local path or s3://bucket/prefix), the run's own.
    uri: str
    snapshot_id: str
    contract: Contract
    partitions: int
    #: How a process reading a partition opens `uri`.
    open_location: Opener
    #: Customers in the table, and of them how many of each class (0, 1).
    rows: int
    class_counts: tuple[int, int]
    report: cleaning.CleaningReport
    #: The table's levels of each category whose levels come from the data.
    levels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: By partition, the IDs it holds that a later partition holds again (kept from there).
    superseded: dict[int, frozenset[str]] = field(default_factory=dict)

    def read_partition(self, index: int) -> pd.DataFrame:
        """Partition `index`'s customers, typed as in the whole table."""
        where = self.open_location(self.uri)
        frame = pd.read_parquet(where.path(_part_file(index)), filesystem=where.filesystem)
        for column, levels in self.levels.items():
            frame[column] = frame[column].cat.set_categories(levels)
        dropped = self.superseded.get(index)
        if dropped:
            kept = ~frame[self.contract.id_column].isin(dropped).to_numpy()
            frame = frame.loc[kept].reset_index(drop=True)
        return frame

    def read(self) -> pd.DataFrame:
        """The whole table in memory (small tables, and tests)."""
        frames = [self.read_partition(i) for i in range(self.partitions)]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


@dataclass(frozen=True)
class _CleanedPart:
    report: cleaning.CleaningReport
    levels: dict[str, tuple[str, ...]]
    class_counts: np.ndarray
    #: 64-bit hashes of the partition's IDs: candidates for IDs held by two partitions.
    id_hashes: np.ndarray


def _part_file(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _id_hashes(ids: pd.Series) -> np.ndarray:
    return pd.util.hash_pandas_object(ids.astype(str), index=False, categorize=False).to_numpy()


def _clean(index: int, table: SnapshotTable, uri: str) -> _CleanedPart:
    contract = table.contract
    cleaned, report = cleaning.clean_partition(table.read_partition(index), table.contract)
    where = table.open_location(uri)
    with where.writing(where.path(_part_file(index))) as target:
        cleaned.to_parquet(target, index=False, filesystem=where.filesystem)
    return _CleanedPart(
        report,
        {
            c: tuple(str(v) for v in cleaned[c].cat.categories)
            for c in cleaning.data_levels(contract)
        },
        np.bincount(cleaned[contract.target_column].to_numpy(), minlength=2),
        _id_hashes(cleaned[contract.id_column]),
    )


def _ids_among(
    index: int, uri: str, open_location: Opener, contract: Contract, hashes: np.ndarray
) -> pd.DataFrame:
    """The partition's customers (ID and class) whose ID hashes to one of `hashes`."""
    where = open_location(uri)
    columns = [contract.id_column, contract.target_column]
    frame = pd.read_parquet(
        where.path(_part_file(index)), columns=columns, filesystem=where.filesystem
    )
    found = frame.loc[np.isin(_id_hashes(frame[contract.id_column]), hashes)]
    return found.astype({contract.id_column: str})


def clean_table(table: SnapshotTable, runner: PartitionRunner, uri: str) -> CleanedTable:
    """The snapshot's customers cleaned a partition at a time into files under `uri` (it
    passed the data checks). An ID in two partitions is found from the partitions' 64-bit ID
    hashes and confirmed on the IDs themselves (a second, ID-only read of the partitions),
    so a hash collision never drops a customer."""
    contract = table.contract
    parts = runner.map("cleaning", _clean, range(table.partitions), table=table, uri=uri)
    levels = {
        column: tuple(sorted({level for part in parts for level in part.levels[column]}))
        for column in cleaning.data_levels(contract)
    }
    classes = sum((p.class_counts for p in parts), np.zeros(2, dtype=np.int64))
    superseded: dict[int, frozenset[str]] = {}
    hashes, counts = np.unique(np.concatenate([p.id_hashes for p in parts]), return_counts=True)
    shared = hashes[counts > 1]  # a partition's own duplicates are gone already
    if len(shared):
        found = runner.map(
            "cleaning",
            _ids_among,
            range(table.partitions),
            uri=uri,
            open_location=table.open_location,
            contract=contract,
            hashes=shared,
        )
        later: set[str] = set()
        for index in reversed(range(table.partitions)):
            ids = found[index][contract.id_column]
            dropped = ids.isin(later).to_numpy()
            if dropped.any():
                superseded[index] = frozenset(ids[dropped])
                classes -= np.bincount(
                    found[index][contract.target_column].to_numpy()[dropped], minlength=2
                )
            later.update(ids)
    across = sum(len(ids) for ids in superseded.values())
    rows = sum(p.report.rows_out for p in parts) - across
    return CleanedTable(
        uri,
        table.snapshot_id,
        contract,
        table.partitions,
        table.open_location,
        rows,
        (int(classes[0]), int(classes[1])),
        cleaning.merge_reports([p.report for p in parts], rows, across),
        levels,
        superseded,
    )


def _split(
    index: int, table: CleanedTable, holdout_fraction: float, seed: int, bounds: np.ndarray
) -> splitting.SplitPart:
    frame = table.read_partition(index)
    return splitting.split_part(frame, table.contract, holdout_fraction, seed, bounds)


def split_table(
    table: CleanedTable,
    runner: PartitionRunner,
    holdout_fraction: float,
    seed: int,
    caps: splitting.SplitCaps,
) -> splitting.CustomerSplits:
    """The customer-keyed split of the table, each side capped by a stratified sample: each
    partition sends its counts and the customers under key bounds set from the table's class
    counts, wide enough that a second pass (four times wider) is a rarity, never a loss."""
    expected = np.outer([1 - holdout_fraction, holdout_fraction], table.class_counts)
    widen = 1.0
    while True:
        parts = runner.map(
            "splitting",
            _split,
            range(table.partitions),
            table=table,
            holdout_fraction=holdout_fraction,
            seed=seed,
            bounds=caps.key_bounds(expected / widen),
        )
        try:
            return splitting.merge_split(
                parts, table.contract, holdout_fraction, seed, caps, table.snapshot_id
            )
        except splitting.SampleShortfallError:
            widen *= 4

"""A snapshot handed from step to step by reference, and worked on a partition at a time.

`raw_customers` passes a SnapshotTable (where the snapshot is, its size), never its rows: the
data checks and cleaning each read the partitions they judge or clean, in their own process
or on the Dask workers a runner (churn_assets.ml.cluster.runners) spreads them over, so no
process holds the raw table whole. The per-partition results merge into exactly what one pass
over the whole table gives (`validation.merge`, `cleaning.merge_cleaned`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from churn_assets.ml.data import cleaning, validation
from churn_assets.ml.data.contract import Contract
from churn_assets.ml.data.snapshots import SnapshotStore

if TYPE_CHECKING:
    from churn_assets.ml.cluster.runners import PartitionRunner


@dataclass(frozen=True)
class SnapshotTable:
    """A verified snapshot (its bytes matched its ID when the reference was made)."""

    uri: str
    snapshot_id: str
    rows: int
    partitions: int
    #: The contract it is read under (the run's, which may not be the environment's).
    contract: Contract

    @classmethod
    def of(cls, store: SnapshotStore, snapshot_id: str) -> SnapshotTable:
        store.verified(snapshot_id)
        info = store.info(snapshot_id)
        return cls(store.uri, snapshot_id, info.rows, store.partitions(snapshot_id), store.contract)

    def read_partition(self, index: int) -> pd.DataFrame:
        """Partition `index` as an export is read: low-cardinality columns categorical."""
        store = SnapshotStore.reader(self.uri, self.contract)
        return store.read_partition(self.snapshot_id, index, categorical=True)


def _check(index: int, table: SnapshotTable) -> validation.PartitionCheck:
    raw = table.read_partition(index)
    return validation.check_partition(raw, table.contract, first_row=int(raw.index[0]))


def _clean(index: int, table: SnapshotTable) -> tuple[pd.DataFrame, cleaning.CleaningReport]:
    return cleaning.clean_partition(table.read_partition(index), table.contract)


def validate_table(table: SnapshotTable, runner: PartitionRunner) -> list[validation.RuleResult]:
    """Every rule's verdict on the whole snapshot, judged a partition at a time."""
    parts = runner.map("validation", _check, range(table.partitions), table=table)
    return validation.merge(parts, table.contract)


def clean_table(
    table: SnapshotTable, runner: PartitionRunner
) -> tuple[pd.DataFrame, cleaning.CleaningReport]:
    """The snapshot's customers cleaned a partition at a time (it passed the data checks)."""
    parts = runner.map("cleaning", _clean, range(table.partitions), table=table)
    return cleaning.merge_cleaned(parts, table.contract)

"""Ranking a base too large for one process: sorted runs merged as a stream.

Each partition's scores are sorted (most at risk first) where they are scored, on a Dask
worker for a large base, and written as a file: a sorted run. The ranked base is the runs
merged, read a row group at a time, so the process that writes the scores files holds a few
row groups per run, never the base: 73.5 million scores ranked in one process took 16 GB.

Hand-written rather than `dask.dataframe.sort_values`: the runs are already sorted, so one
pass over each is all a merge needs, where a distributed sort would shuffle the whole base
across the workers to then write one file anyway; and the merge keeps ties in the order a
single sort of the whole table would (partition, then row), so the ranking does not depend
on where it was computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import numpy as np
import pyarrow as pa

#: Rows per batch the merge emits: the size of a row group of the files it feeds.
BATCH_ROWS = 262_144


def descending_order(values: np.ndarray) -> np.ndarray:
    """The positions of `values`, largest first, ties in their order: how scores are ranked.

    A stable sort on the probability alone: sorting on the ID as well would cost seconds per
    million customers (string comparisons) and tell ties apart no better than their order.
    """
    return np.argsort(-values, kind="stable")


def sort_descending(table: pa.Table, column: str) -> pa.Table:
    """`table` most at risk first, ties in their order: one run of the merge."""
    return table.take(descending_order(table.column(column).to_numpy()))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns in its order and types; one it lacks as nulls."""
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class _Run:
    """One sorted run: the rows read from it and not yet emitted."""

    def __init__(self, index: int, batches: Iterator[pa.Table], column: str) -> None:
        self.index = index
        self._batches = batches
        self._column = column
        self.open = True
        self.rows = pa.table({})
        self.keys = np.empty(0)

    def refill(self) -> None:
        """Read the next non-empty batch once the rows held are all emitted."""
        while self.open and not len(self.keys):
            batch = next(self._batches, None)
            if batch is None:
                self.open = False
                return
            self.rows = batch
            # ascending keys: the negated column, so ties break towards the earlier row
            self.keys = -batch.column(self._column).to_numpy()

    def take(self, count: int) -> pa.Table:
        taken = self.rows.slice(0, count)
        self.rows = self.rows.slice(count)
        self.keys = self.keys[count:]
        return taken


def merge_descending(
    runs: Sequence[Iterator[pa.Table]], column: str, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.Table]:
    """The runs (each sorted descending on `column`, ties in row order) as one such order,
    ties broken by run, then row: what one stable sort of the runs concatenated gives.

    Emits, each round, every held row that no unread row can precede: those at or before the
    last held row of the run whose last held row comes first, among runs with rows unread.
    That run is emptied and read again next round, so every round makes progress.
    """
    held = [_Run(i, iter(batches), column) for i, batches in enumerate(runs)]
    pending: list[pa.Table] = []
    pending_rows = 0
    while True:
        for run in held:
            run.refill()
        live = [run for run in held if len(run.keys)]
        if not live:
            break
        unread = [run for run in live if run.open]
        pieces = []
        if unread:
            # the run whose last held row is first in the merged order (the earliest on ties)
            bound = min(unread, key=lambda r: (r.keys[-1], r.index))
            last = bound.keys[-1]
            for run in live:
                side: Literal["left", "right"] = "right" if run.index <= bound.index else "left"
                pieces.append(run.take(int(np.searchsorted(run.keys, last, side=side))))
        else:
            pieces = [run.take(len(run.keys)) for run in live]
        emitted = pa.concat_tables([p for p in pieces if p.num_rows])
        pending.append(sort_descending(emitted, column))
        pending_rows += emitted.num_rows
        if pending_rows >= batch_rows:
            yield pa.concat_tables(pending).combine_chunks()
            pending, pending_rows = [], 0
    if pending_rows:
        yield pa.concat_tables(pending).combine_chunks()


def ranked(batches: Iterable[pa.Table], model_version: str) -> Iterator[pa.Table]:
    """Merged batches with their `rank` (1 most at risk) first and the scoring version last."""
    start = 1
    for batch in batches:
        rows = batch.num_rows
        numbered = batch.add_column(0, "rank", pa.array(np.arange(start, start + rows)))
        yield numbered.append_column("model_version", pa.repeat(pa.scalar(model_version), rows))
        start += rows

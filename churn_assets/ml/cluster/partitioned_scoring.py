"""Batch scoring a partition of the cleaned table at a time, in process or on a Dask cluster.

Each partition is one task (a runner's map) that reads its file from the run's folder, keeps
its active customers, scores them with the model it loads from the registry once per process,
sorts them and writes them as a sorted run beside the cleaned files; it returns only totals.
The step then streams the runs merged (churn_assets.ml.model.ranking) into the scores files,
so no process holds the scored base. A task is cheap to recompute from its file and rewrites
its run whole, so the scheduler reruns the partitions of a worker that dies; nothing is
scattered into worker memory that would be lost with it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churn_assets.ml.data.partitioned import CleanedTable, Opener
from churn_assets.ml.model import ranking

if TYPE_CHECKING:
    from churn_assets.ml.cluster.runners import PartitionRunner

#: Customers most at risk the step shows in its metadata.
TOP_ROWS = 10
#: Rows per row group of a run's file: what the merge holds of each run at a time.
_RUN_GROUP_ROWS = 65_536


@dataclass(frozen=True)
class ScoringModel:
    """The registered version a task loads: sent to workers as these strings, never pickled."""

    tracking_uri: str
    name: str
    version: str
    #: The version's MLflow run: a version number reused by another registry never hits a
    #: model cached for the first, nor passes for it.
    run_id: str
    threshold: float
    #: The public key (PEM) the version's manifest and attestation are verified with on the
    #: worker, which reads the files from the store itself.
    verify_key: str
    #: The uplift model in production, when there is one: customers are then offered by its
    #: expected incremental value instead of the threshold.
    uplift: UpliftScoring | None = None


@dataclass(frozen=True)
class UpliftScoring:
    """An uplift version a task loads as it loads the churn model, and the prices that turn
    its uplift into expected incremental value (those the version was judged with)."""

    model: ScoringModel
    saved_value: float
    offer_cost: float


@functools.lru_cache(maxsize=2)
def _pipeline(model: ScoringModel) -> Any:
    """The registered pipeline, verified and loaded once per process and version."""
    import os

    import mlflow
    from mlflow.tracking import MlflowClient

    from churn_assets.ml.registry import artifacts, signing, tracking

    os.environ.update(tracking.NO_PICKLE)
    mlflow.set_tracking_uri(model.tracking_uri)
    mlflow.set_registry_uri(model.tracking_uri)
    version = MlflowClient(model.tracking_uri, model.tracking_uri).get_model_version(
        model.name, model.version
    )
    if version.run_id != model.run_id:
        raise signing.SignatureError(
            f"{model.name} version {model.version} is no longer the version the step scored"
        )
    verifier = signing.verifier_from_pem(model.verify_key)
    return artifacts.load_version(verifier, version, model.tracking_uri, attested=True).pipeline


@dataclass(frozen=True)
class _ScoredPart:
    rows: int
    probability_sum: float
    offered: int
    segments: pd.DataFrame
    #: The partition's customers most at risk, as many as the step shows.
    top: pd.DataFrame


def _run_file(index: int) -> str:
    return f"run-{index:05d}.parquet"


def _score(
    index: int, table: CleanedTable, model: ScoringModel, reasons: int, uri: str
) -> _ScoredPart:
    from churn_assets.ml.model import batch, scoring
    from churn_assets.ml.model import reasons as explained

    active = scoring.active_customers(table.read_partition(index), table.contract)
    pipeline = _pipeline(model)
    probability = batch.churn_probability(pipeline, active) if len(active) else np.empty(0)
    why = explained.frame_reasons(pipeline, active, reasons) if reasons and len(active) else None
    value = None
    if model.uplift is not None:
        from churn_assets.ml.campaigns import learner, uplift

        priced = model.uplift
        lift = (
            uplift.predicted_uplift(_pipeline(priced.model), active) if len(active) else np.empty(0)
        )
        eiv = learner.expected_incremental_value(lift, priced.saved_value, priced.offer_cost)
        value = scoring.UpliftColumns(priced.model.version, lift, eiv)
    scores = scoring.score_columns(active, table.contract, probability, model.threshold, why, value)
    del active
    run = ranking.sort_descending(
        pa.Table.from_pandas(scores, preserve_index=False), "churn_probability"
    )
    where = table.open_location(uri)
    with where.writing(where.path(_run_file(index))) as target:
        pq.write_table(run, target, filesystem=where.filesystem, row_group_size=_RUN_GROUP_ROWS)
    return _ScoredPart(
        len(scores),
        float(probability.sum()),
        int(scores["offer"].sum()),
        scoring.segment_totals(scores, table.contract),
        run.slice(0, TOP_ROWS).to_pandas(),
    )


@dataclass(frozen=True)
class ScoredTable:
    """A base's active customers scored: each partition's scores sorted (a run) in a file in
    `uri`, and the totals the step reports, summed over the partitions."""

    uri: str
    partitions: int
    #: How this process opens `uri`.
    open_location: Opener
    model_version: str
    rows: int
    probability_sum: float
    offered: int
    #: `scoring.segment_totals` of the whole base.
    segments: pd.DataFrame
    #: The first `TOP_ROWS` of the ranking.
    top: pd.DataFrame

    def batches(self, batch_rows: int = ranking.BATCH_ROWS) -> Iterator[pa.Table]:
        """The base ranked (`rank` 1 most at risk, then the version), a batch at a time."""
        where = self.open_location(self.uri)
        with contextlib.ExitStack() as files:
            opened = [
                pq.ParquetFile(
                    files.enter_context(where.filesystem.open_input_file(where.path(_run_file(i))))
                )
                for i in range(self.partitions)
            ]
            runs = [run for run in opened if run.metadata.num_rows]
            if not runs:
                return
            # A column typed by what a partition held (a carry column blank throughout one
            # partition reads as nulls) takes the type it has in the others.
            schema = pa.unify_schemas(
                [run.schema_arrow for run in runs], promote_options="permissive"
            )
            merged = ranking.merge_descending(
                [
                    # a row group per run in memory at a time, however large the base
                    (
                        ranking.conform(pa.Table.from_batches([batch]), schema)
                        for batch in run.iter_batches(batch_size=_RUN_GROUP_ROWS)
                    )
                    for run in runs
                ],
                "churn_probability",
                batch_rows,
            )
            yield from ranking.ranked(merged, self.model_version)

    def read(self) -> pd.DataFrame:
        """The whole ranking in memory (small bases, and tests)."""
        return pa.concat_tables(self.batches()).to_pandas()

    def remove(self) -> None:
        """Drop the runs once the scores files hold them: they are a run's scratch."""
        where = self.open_location(self.uri)
        where.filesystem.delete_dir(where.root)


def score_table(
    table: CleanedTable, runner: PartitionRunner, model: ScoringModel, uri: str, reasons: int = 0
) -> ScoredTable:
    """The table's active customers scored a partition at a time, with `reasons` reasons
    each, into sorted runs in the folder `uri`; `ScoredTable.batches` ranks them."""
    from churn_assets.ml.model import scoring

    parts = runner.map(
        "scoring",
        _score,
        range(table.partitions),
        table=table,
        model=model,
        reasons=reasons,
        uri=uri,
    )
    return ScoredTable(
        uri,
        table.partitions,
        table.open_location,
        model.version,
        sum(p.rows for p in parts),
        sum(p.probability_sum for p in parts),
        sum(p.offered for p in parts),
        scoring.combined_totals([p.segments for p in parts]),
        # the partitions' own first rows hold the base's, ranked as the merge ranks them
        scoring.rank(pd.concat([p.top for p in parts], ignore_index=True), model.version).head(
            TOP_ROWS
        ),
    )

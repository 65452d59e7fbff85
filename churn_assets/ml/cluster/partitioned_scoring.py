"""Batch scoring a partition of the cleaned table at a time, in process or on a Dask cluster.

Each partition is one task (a runner's map) that reads its file from the run's folder, keeps
its active customers and scores them with the model it loads from the registry once per
process; the step ranks what the tasks return. A task is cheap to recompute from its file,
so the scheduler reruns the partitions of a worker that dies; nothing is scattered into
worker memory that would be lost with it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn_assets.ml.data.partitioned import CleanedTable

if TYPE_CHECKING:
    from churn_assets.ml.cluster.runners import PartitionRunner


@dataclass(frozen=True)
class ScoringModel:
    """The registered version a task loads: sent to workers as these strings, never pickled."""

    tracking_uri: str
    #: models:/<name>/<version>
    uri: str
    #: The version's MLflow run: a version number reused by another registry never hits a
    #: model cached for the first.
    run_id: str
    version: str
    threshold: float


@functools.lru_cache(maxsize=2)
def _pipeline(tracking_uri: str, model_uri: str, run_id: str) -> Any:
    """The registered pipeline, loaded once per process and version."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.sklearn.load_model(model_uri)


def _score(index: int, table: CleanedTable, model: ScoringModel, reasons: int) -> pd.DataFrame:
    from churn_assets.ml.model import batch, scoring
    from churn_assets.ml.model import reasons as explained

    active = scoring.active_customers(table.read_partition(index), table.contract)
    pipeline = _pipeline(model.tracking_uri, model.uri, model.run_id)
    probability = batch.churn_probability(pipeline, active) if len(active) else np.empty(0)
    why = explained.frame_reasons(pipeline, active, reasons) if reasons and len(active) else None
    return scoring.score_columns(active, table.contract, probability, model.threshold, why)


def score_table(
    table: CleanedTable, runner: PartitionRunner, model: ScoringModel, reasons: int = 0
) -> pd.DataFrame:
    """The table's active customers scored a partition at a time and ranked (rank 1 most at
    risk), with `reasons` reasons each."""
    from churn_assets.ml.model import scoring

    parts = runner.map(
        "scoring", _score, range(table.partitions), table=table, model=model, reasons=reasons
    )
    scores = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    del parts  # tens of millions of rows at a time: never three copies at once
    return scoring.rank(scores, model.version)

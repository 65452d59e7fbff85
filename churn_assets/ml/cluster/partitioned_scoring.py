"""Batch scoring per partition on a Dask cluster.

The rows to score are written as numbered Parquet partitions, and each partition is one task
(runners.OnCluster) that reads its file and scores it with the model it loads from the
registry once per worker process. A task is cheap to recompute from its file, so the scheduler
reruns the partitions of a worker that dies; nothing is scattered into worker memory that
would be lost with it.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn_assets.ml.cluster.engine import ClusterSettings
from churn_assets.ml.cluster.runners import ClusterError, OnCluster

if TYPE_CHECKING:
    from distributed import Client

_POSITION = "__position"
_PROBABILITY = "churn_probability"


def write_partitions(frame: pd.DataFrame, folder: Path, partition_rows: int) -> list[Path]:
    """`frame` as Parquet files of at most `partition_rows` rows, numbered in row order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, start in enumerate(range(0, len(frame), partition_rows)):
        part = frame.iloc[start : start + partition_rows]
        path = folder / f"part-{number:06d}.parquet"
        part.assign(**{_POSITION: np.arange(start, start + len(part))}).to_parquet(
            path, index=False
        )
        paths.append(path)
    return paths


@functools.lru_cache(maxsize=2)
def _model(tracking_uri: str, model_uri: str) -> Any:
    """The registered pipeline, loaded once per worker process and model version."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.sklearn.load_model(model_uri)


def _score_partition(path: str, tracking_uri: str, model_uri: str) -> pd.Series:
    from churn_assets.ml.model import batch

    part = pd.read_parquet(path)
    probability = batch.churn_probability(_model(tracking_uri, model_uri), part)
    return pd.Series(
        np.asarray(probability, dtype=np.float64),
        index=part[_POSITION].to_numpy(),
        name=_PROBABILITY,
    )


def churn_probability_on_cluster(
    client: Client,
    frame: pd.DataFrame,
    columns: list[str],
    model_uri: str,
    tracking_uri: str,
    cluster: ClusterSettings,
    work_folder: Path,
) -> np.ndarray:
    """Each row's churn probability, in `frame`'s order, computed partition by partition.

    Bounded by `cluster.timeout_s`: a cluster that hangs or loses every worker raises
    ClusterError instead of holding the run.
    """
    try:
        paths = write_partitions(frame[columns], work_folder, cluster.partition_rows)
        parts = OnCluster(client, cluster).map(
            "scoring",
            _score_partition,
            [str(p) for p in paths],
            tracking_uri=tracking_uri,
            model_uri=model_uri,
        )
    finally:
        shutil.rmtree(work_folder, ignore_errors=True)
    scored = pd.concat(parts) if parts else pd.Series(dtype=np.float64)
    out = np.full(len(frame), np.nan)
    out[scored.index.to_numpy()] = scored.to_numpy()
    if len(scored) != len(frame) or np.isnan(out).any():
        raise ClusterError(
            f"scoring on {cluster.describe()} returned {len(scored)} of {len(frame)} rows"
        )
    return out

"""The stores the settings point at, opened here so the data layer below never reads settings.

`churn_assets.ml.data` takes a `storage.Location`, a `SnapshotStore` or an `S3Access`; this
module builds them from ChurnSettings for the Dagster layer, the CLI and the benchmarks.
"""

from __future__ import annotations

import os

from churn_assets.ml import storage
from churn_assets.ml.data.snapshots import SnapshotStore
from churn_assets.ml.settings import ChurnSettings


def s3_access(settings: ChurnSettings) -> storage.S3Access:
    """The S3 store (MinIO) MLflow's S3 variables name: its artifacts and our files alike."""
    return storage.S3Access(
        endpoint_url=settings.mlflow_s3_endpoint_url or None,
        access_key=settings.aws_access_key_id,
        secret_key=settings.aws_secret_access_key,
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


def open_location(uri: str) -> storage.Location:
    """The folder `uri` with the credentials of the process that calls it.

    What partitioned tables open their files with on a Dask worker: the worker reads its own
    environment, so no credentials travel with a task (pickled by reference, by its name).
    """
    return storage.location(uri, s3_access(ChurnSettings()))


def snapshot_store(settings: ChurnSettings) -> SnapshotStore:
    """The snapshot store CHURN_SNAPSHOT_URI (or <state>/snapshots) names, under the settings'
    data contract."""
    where = storage.location(settings.snapshot_uri, s3_access(settings))
    return SnapshotStore(where, settings.contract(), settings.max_extract_ahead_days)

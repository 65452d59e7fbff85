"""Which Dask cluster a step uses, if any: a remote scheduler, a LocalCluster, or none.

Below `min_rows` customers the in-process path wins: starting two worker processes and
shipping partitions to them costs seconds that a table of a few hundred thousand rows never
pays back. From there on, each partition of the snapshot (and of the cleaned table made from
it) is one task, so a worker's memory is bounded by the partition, not the table.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from churn_assets.ml.settings import ChurnSettings

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class ClusterSettings:
    scheduler: str | None
    workers: int
    memory_limit: str
    min_rows: int
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: ChurnSettings) -> ClusterSettings:
        return cls(
            scheduler=settings.dask_scheduler,
            workers=settings.dask_workers or max(1, os.cpu_count() or 1),
            memory_limit=settings.dask_memory_limit,
            min_rows=settings.dask_min_rows,
            timeout_s=settings.dask_timeout_s,
        )

    def uses_cluster(self, rows: int) -> bool:
        """A configured scheduler is always used; a LocalCluster only pays off on big tables."""
        return self.scheduler is not None or rows >= self.min_rows

    def describe(self) -> str:
        if self.scheduler is not None:
            return f"the Dask cluster at {self.scheduler}"
        return f"a LocalCluster of {self.workers} worker process(es)"


@contextmanager
def open_client(cluster: ClusterSettings) -> Iterator[Client]:
    """A client of the configured scheduler, or of a LocalCluster that lives as long as this.

    LocalCluster workers are processes with one thread each: LightGBM and pandas hold the GIL
    for long stretches, so threads would serialize, and a killed worker process is restarted
    by its nanny while the scheduler reruns its partitions elsewhere.
    """
    from distributed import Client, LocalCluster

    if cluster.scheduler is not None:
        with Client(cluster.scheduler, timeout="60s") as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=cluster.workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=cluster.memory_limit,
            dashboard_address=None,
            # The run's own environment (MLflow, S3) reaches the workers: they are spawned
            # from this process.
        ) as local,
        Client(local) as client,
    ):
        yield client

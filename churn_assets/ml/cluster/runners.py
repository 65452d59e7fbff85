"""Where a step's per-partition work runs: in this process, or spread over a Dask cluster.

Validation, cleaning and scoring are written once, as a function of one partition, and a
runner maps it over the partitions. In process, a loop; on a cluster, one Dask task per
partition (`Client.map`), each cheap to recompute from the partition it reads, so the
scheduler reruns the partitions of a worker that dies. The whole computation is bounded by
CHURN_DASK_TIMEOUT_S: a cluster that hangs or loses every worker fails the step with a
ClusterError, never holds it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from churn_assets.ml.cluster.engine import ClusterSettings

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")
#: A partition whose worker died is recomputed this many times on the others.
RETRIES = 2


class ClusterError(RuntimeError):
    """The cluster did not return every partition's result (timeout or lost workers)."""


class PartitionRunner(Protocol):
    def map(
        self, what: str, task: Callable[..., T], items: Sequence[Any], **shared: Any
    ) -> list[T]:
        """`task(item, **shared)` for each item, results in the items' order; `what` names
        the work in errors ("scoring")."""
        ...

    def describe(self) -> str: ...


class InProcess:
    """Partitions one after another in this process: small tables, and the reference path."""

    def map(
        self, what: str, task: Callable[..., T], items: Sequence[Any], **shared: Any
    ) -> list[T]:
        return [task(item, **shared) for item in items]

    def describe(self) -> str:
        return "this process"


class OnCluster:
    """One task per partition on the cluster behind `client`."""

    def __init__(self, client: Client, cluster: ClusterSettings) -> None:
        self._client = client
        self._cluster = cluster

    def describe(self) -> str:
        return self._cluster.describe()

    def map(
        self, what: str, task: Callable[..., T], items: Sequence[Any], **shared: Any
    ) -> list[T]:
        from distributed import as_completed

        futures = self._client.map(task, list(items), retries=RETRIES, pure=False, **shared)
        position = {future.key: index for index, future in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        # Each result is fetched as its task finishes and then released on the worker, so a
        # worker holds about one partition's result at a time, not all it has computed.
        try:
            for future in as_completed(futures, timeout=self._cluster.timeout_s):
                results[position[future.key]] = future.result()
                future.release()
        except TimeoutError as error:
            self._client.cancel(futures)
            raise ClusterError(
                f"{what} on {self.describe()} took longer than {self._cluster.timeout_s:g} s "
                "(CHURN_DASK_TIMEOUT_S)"
            ) from error
        except Exception as error:  # a task that failed on every try, or lost workers
            self._client.cancel(futures)
            raise ClusterError(
                f"{what} on {self.describe()} failed: {type(error).__name__}: {error}"
            ) from error
        return results

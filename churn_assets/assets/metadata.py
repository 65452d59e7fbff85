"""What every churn asset shares: its group, owners, and metadata builders for the UI."""

from collections.abc import Callable
from typing import Any

import dagster as dg
import pandas as pd

from churn_assets.automation import FOLLOWS_PASSED_CHECKS
from churn_assets.ml.settings import ChurnSettings

GROUP = "churn"
OWNERS = ["team:churn-ml"]


#: One retrain at a time per instance: runs queue for it (deployed: whole runs, local:
#: step by step) instead of racing; correctness never depends on it (run-scoped I/O and the
#: registry's locked compare-and-set do that).
RETRAIN_POOL = "churn_retrain"


def churn_asset(
    *, kinds: set[str], code_version: str = "1", **kwargs: Any
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """`dg.asset` for every churn asset: one group, one owner."""
    return dg.asset(
        group_name=GROUP, owners=OWNERS, kinds=kinds, code_version=code_version, **kwargs
    )


def retrain_asset(
    *, kinds: set[str], **kwargs: Any
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """Each stage of a retrain: the retrain pool and one automation rule."""
    return churn_asset(
        kinds=kinds, pool=RETRAIN_POOL, automation_condition=FOLLOWS_PASSED_CHECKS, **kwargs
    )


def table_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()]
    )


def frame_metadata(frame: pd.DataFrame) -> dict[str, Any]:
    """Row count and column schema, in the keys the Dagster UI renders natively."""
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": table_schema(frame),
    }


def table_metadata(frame: pd.DataFrame) -> dg.TableMetadataValue:
    """A small frame as a table the Dagster UI renders natively, floats rounded for reading."""
    records = [
        dg.TableRecord({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        for row in frame.astype(object).to_dict("records")
    ]
    return dg.MetadataValue.table(records, table_schema(frame))


def mlflow_links(settings: ChurnSettings, experiment_id: str, run_id: str) -> dict[str, Any]:
    """Run ID and a link to the run in the MLflow UI (`make mlflow-ui` for the local store)."""
    base = settings.ui_url.rstrip("/")
    return {
        "mlflow_run_id": run_id,
        "mlflow_run": dg.MetadataValue.url(f"{base}/#/experiments/{experiment_id}/runs/{run_id}"),
        "mlflow_tracking_uri": settings.tracking_uri,
    }


def model_links(settings: ChurnSettings, name: str, version: str) -> dict[str, Any]:
    base = settings.ui_url.rstrip("/")
    return {
        "model_uri": f"models:/{name}/{version}",
        "model_version": dg.MetadataValue.url(f"{base}/#/models/{name}/versions/{version}"),
    }

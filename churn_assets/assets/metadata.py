"""What every churn asset shares: its group, owners, and metadata builders for the UI."""

import math
from collections.abc import Callable, Mapping
from numbers import Integral, Real
from typing import Any

import dagster as dg
import pandas as pd

from churn_assets.automation import FOLLOWS_PASSED_CHECKS
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.uris import without_credentials

#: Significant digits of a figure as people read it in the UI (the registry keeps more).
SIGNIFICANT_DIGITS = 4

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


def readable(value: float) -> float | None:
    """A figure as a person reads it: 4 significant digits (and every digit of a whole part);
    None for NaN or infinity, which no metadata entry carries."""
    if not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    decimals = SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(value)))
    return round(float(value), max(decimals, 0))


def ui_metadata(figures: Mapping[str, Any], **constants: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as the UI should show it, built the same way by every asset and check.

    `figures` change from run to run: the UI plots the numeric ones across materializations,
    so floats are rounded for reading and a missing figure (None, NaN) is left out, never
    written as NaN. `constants` (settings=..., thresholds=..., contract=...) are what each run
    only echoes: each keyword becomes one JSON entry, which the UI does not plot as a flat line.
    """
    shown = {name: _readable_value(value) for name, value in figures.items()}
    shown = {name: value for name, value in shown.items() if value is not None}
    for name, values in constants.items():
        if values:
            shown[name] = dg.MetadataValue.json(_readable_value(values))
    return shown


def _readable_value(value: Any) -> Any:
    """Floats (numpy's included) rounded by `readable`, inside mappings, lists and JSON
    entries alike; anything else as it is."""
    if isinstance(value, dg.JsonMetadataValue):
        return dg.MetadataValue.json(_readable_value(value.data))
    if isinstance(value, Mapping):
        return {key: _readable_value(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_readable_value(inner) for inner in value]
    if isinstance(value, Real) and not isinstance(value, Integral):  # counts and bools stay
        return readable(float(value))
    return value


def table_metadata(frame: pd.DataFrame) -> dg.TableMetadataValue:
    """A small frame as a table the Dagster UI renders natively, floats rounded for reading
    and a missing value (NaN) an empty cell."""
    records = [
        dg.TableRecord({k: _readable_value(v) for k, v in row.items()})
        for row in frame.astype(object).to_dict("records")
    ]
    return dg.MetadataValue.table(records, table_schema(frame))


def mlflow_links(settings: ChurnSettings, experiment_id: str, run_id: str) -> dict[str, Any]:
    """Run ID and a link to the run in the MLflow UI (`make mlflow-ui` for the local store)."""
    base = settings.ui_url.rstrip("/")
    return {
        "mlflow_run_id": run_id,
        "mlflow_run": dg.MetadataValue.url(f"{base}/#/experiments/{experiment_id}/runs/{run_id}"),
        "mlflow_tracking_uri": without_credentials(settings.tracking_uri),
    }


def model_links(settings: ChurnSettings, name: str, version: str) -> dict[str, Any]:
    base = settings.ui_url.rstrip("/")
    return {
        "model_uri": f"models:/{name}/{version}",
        "model_version": dg.MetadataValue.url(f"{base}/#/models/{name}/versions/{version}"),
    }

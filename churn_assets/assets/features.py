"""Features: the train/holdout split and the preprocessor fitted on training rows."""

import tempfile
from pathlib import Path

import dagster as dg
import skops.io
from dagster_mlflow.resources import MlFlow
from pydantic import Field
from sklearn.compose import ColumnTransformer

from churn_assets.assets.metadata import frame_metadata, retrain_asset, ui_metadata
from churn_assets.ml.cluster.runners import ClusterError
from churn_assets.ml.data import partitioned, point_in_time
from churn_assets.ml.data.partitioned import CleanedTable
from churn_assets.ml.data.splitting import (
    HOLDOUT_FRACTION,
    SPLIT_SEED,
    CustomerSplits,
    features_and_target,
)
from churn_assets.ml.model import features
from churn_assets.ml.stores import snapshot_store
from churn_assets.resources import ChurnSettingsResource, DaskResource


class SplitConfig(dg.Config):
    holdout_fraction: float = Field(
        HOLDOUT_FRACTION, gt=0, lt=1, description="Share of customers held out for evaluation."
    )
    seed: int = Field(SPLIT_SEED, description="Seed fixing which customers land in the holdout.")


@retrain_asset(kinds={"sklearn", "pandas"})
def customer_splits(
    context: dg.AssetExecutionContext,
    config: SplitConfig,
    settings: ChurnSettingsResource,
    dask: DaskResource,
    cleaned_customers: CleanedTable,
) -> dg.Output:
    """Training rows (point in time once history allows), holdout by customer, out of time."""
    # Each side is a stratified sample past CHURN_TRAIN_MAX_ROWS / CHURN_HOLDOUT_MAX_ROWS,
    # drawn a partition at a time (on the Dask cluster for big tables): only the samples
    # are ever in this process.
    churn_settings = settings.get()
    table = cleaned_customers

    def by_status() -> CustomerSplits:
        with dask.runner(table.rows) as runner:
            context.log.info(f"splitting {table.partitions} partition(s) in {runner.describe()}")
            try:
                return partitioned.split_table(
                    table, runner, config.holdout_fraction, config.seed, churn_settings.split_caps
                )
            except ClusterError as error:
                raise dg.Failure(description=str(error), allow_retries=False) from error

    splits = point_in_time.training_splits(
        snapshot_store(churn_settings),
        table.snapshot_id,
        config.holdout_fraction,
        config.seed,
        churn_settings.outcome_window_days,
        churn_settings.split_caps,
        by_status,
    )
    target = splits.contract.target_column
    out_of_time: dict[str, str | int | float] = {}
    if splits.out_of_time is not None:
        out_of_time = {
            "out_of_time_day": splits.out_of_time_day or "",
            "out_of_time_rows": len(splits.out_of_time),
            "out_of_time_churn_rate": float(splits.out_of_time[target].mean()),
            "training_days": ", ".join(splits.training_days),
        }
    return dg.Output(
        splits,
        metadata=ui_metadata(
            {
                "dagster/row_count": len(splits.train) + len(splits.holdout),
                "label": splits.basis,
                "train_rows": len(splits.train),
                "train_rows_available": splits.train_available,
                "holdout_rows": len(splits.holdout),
                "holdout_rows_available": splits.holdout_available,
                "train_churn_rate": float(splits.train[target].mean()),
                "holdout_churn_rate": float(splits.holdout[target].mean()),
                **out_of_time,
                "snapshot_id": splits.snapshot_id,
            }
        ),
    )


@retrain_asset(kinds={"sklearn", "mlflow"})
def preprocessor(mlflow: dg.ResourceParam[MlFlow], customer_splits: CustomerSplits) -> dg.Output:
    """Column transform fitted on training rows only; logged to MLflow and part of the model."""
    contract = customer_splits.contract
    train_features, _ = features_and_target(customer_splits.train, contract)
    fitted: ColumnTransformer = features.fit_preprocessor(train_features, contract)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "preprocessor.skops"
        skops.io.dump(fitted, path)
        mlflow.log_artifact(str(path), artifact_path="preprocessor")
    output = features.output_features(fitted)
    return dg.Output(
        fitted,
        metadata=ui_metadata(
            {
                **frame_metadata(train_features),
                "output_features": ", ".join(output),
                "categorical_features": len(contract.categorical_features),
                "numeric_features": len(contract.numeric_features),
                "contract_digest": contract.digest[:12],
                "mlflow_artifact": "preprocessor/preprocessor.skops",
                "mlflow_run_id": mlflow.active_run().info.run_id,
            }
        ),
    )

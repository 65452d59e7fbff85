"""Features: the train/holdout split and the preprocessor fitted on training rows."""

import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd
import skops.io
from dagster_mlflow.resources import MlFlow
from pydantic import Field
from sklearn.compose import ColumnTransformer

from churn_assets.assets.metadata import frame_metadata, retrain_asset
from churn_assets.ml.data import point_in_time
from churn_assets.ml.data.snapshots import SnapshotStore
from churn_assets.ml.data.splitting import (
    HOLDOUT_FRACTION,
    SPLIT_SEED,
    CustomerSplits,
    features_and_target,
)
from churn_assets.ml.model import features
from churn_assets.resources import ChurnSettingsResource


class SplitConfig(dg.Config):
    holdout_fraction: float = Field(
        HOLDOUT_FRACTION, gt=0, lt=1, description="Share of customers held out for evaluation."
    )
    seed: int = Field(SPLIT_SEED, description="Seed fixing which customers land in the holdout.")


@retrain_asset(kinds={"sklearn", "pandas"})
def customer_splits(
    config: SplitConfig, settings: ChurnSettingsResource, cleaned_customers: pd.DataFrame
) -> dg.Output:
    """Training rows (point in time once history allows), holdout by customer, out of time."""
    churn_settings = settings.get()
    splits = point_in_time.training_splits(
        SnapshotStore.from_settings(churn_settings),
        cleaned_customers,
        config.holdout_fraction,
        config.seed,
        churn_settings.outcome_window_days,
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
        metadata={
            "dagster/row_count": len(splits.train) + len(splits.holdout),
            "label": splits.basis,
            "train_rows": len(splits.train),
            "holdout_rows": len(splits.holdout),
            "train_churn_rate": float(splits.train[target].mean()),
            "holdout_churn_rate": float(splits.holdout[target].mean()),
            **out_of_time,
            "snapshot_id": splits.snapshot_id,
        },
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
        metadata={
            **frame_metadata(train_features),
            "output_features": ", ".join(output),
            "categorical_features": len(contract.categorical_features),
            "numeric_features": len(contract.numeric_features),
            "contract_digest": contract.digest[:12],
            "mlflow_artifact": "preprocessor/preprocessor.skops",
            "mlflow_run_id": mlflow.active_run().info.run_id,
        },
    )

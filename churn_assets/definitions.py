"""The churn code location: wiring only."""

import dagster as dg

from churn_assets.assets import evaluation, features, ingest, promotion, training
from churn_assets.checks import customer_data_quality, quality_gate
from churn_assets.resources import mlflow_tracking_resource
from churn_assets.sensors import failed_runs_mlflow_cleanup

churn_assets = dg.load_assets_from_modules([ingest, features, training, evaluation, promotion])

churn_training = dg.define_asset_job(
    "churn_training",
    selection=dg.AssetSelection.assets(*churn_assets),
    description="The whole graph: data to a gated, promoted churn model.",
)

defs = dg.Definitions(
    assets=churn_assets,
    asset_checks=[customer_data_quality, quality_gate],
    jobs=[churn_training],
    sensors=[failed_runs_mlflow_cleanup],
    resources={"mlflow": mlflow_tracking_resource},
    # The graph is one chain on one machine: a process per step would re-import MLflow,
    # sklearn and LightGBM (~9 s each, measured) for steps that take well under a second.
    executor=dg.in_process_executor,
)

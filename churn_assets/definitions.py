"""The churn code location: wiring only."""

import dagster as dg

from churn_assets.start_up import bulk_imports

# Every Dagster process of the platform imports this module: each run, code server, sensor
# daemon and CLI. Importing the stack with the collector off, skops first (start_up.py),
# takes 2.9 s of CPU instead of 4.5 s here, for every one of them.
with bulk_imports():
    from churn_assets.assets import (
        campaigns,
        evaluation,
        features,
        ingest,
        landing,
        monitoring,
        promotion,
        scoring,
        training,
    )
    from churn_assets.checks import (
        customer_data_contract,
        extract_drift,
        offers_work,
        quality_gate,
        realized_auc,
        uplift_pays,
    )
    from churn_assets.jobs import churn_training, merge_extract, record_contacts
    from churn_assets.resources import churn_resources
    from churn_assets.schedules import weekly_retrain
    from churn_assets.sensors import (
        churn_automation,
        failed_runs_mlflow_cleanup,
        incoming_contact_logs,
        incoming_extracts,
        realized_retrain,
    )

churn_assets = dg.load_assets_from_modules(
    [landing, ingest, features, training, evaluation, promotion, scoring, campaigns, monitoring],
    include_specs=True,
)

defs = dg.Definitions(
    assets=churn_assets,
    asset_checks=[
        customer_data_contract,
        quality_gate,
        extract_drift,
        realized_auc,
        offers_work,
        uplift_pays,
    ],
    jobs=[churn_training, merge_extract, record_contacts],
    schedules=[weekly_retrain],
    sensors=[
        incoming_extracts,
        incoming_contact_logs,
        churn_automation,
        failed_runs_mlflow_cleanup,
        realized_retrain,
    ],
    resources=churn_resources(),
    # The graph is one chain on one machine: a process per step would re-import MLflow,
    # sklearn and LightGBM (~9 s each, measured) for steps that take well under a second.
    executor=dg.in_process_executor,
)

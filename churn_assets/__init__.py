"""Churn platform code location.

Imports nothing, so `serving` can use `churn_assets.ml` without pulling in Dagster.
"""

import os
import warnings

# MLflow 3 reports usage to Databricks from every process that imports it, fetching its
# settings over the internet first. A platform holding customer data does not report to a vendor
# unasked, and it often runs where nothing outside answers (each try then waits on a timeout).
# Set before MLflow is imported, which reads it once; MLFLOW_DISABLE_TELEMETRY=false allows it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Known noise, said here once so every process (runs, the UI's code server, tests) is spared
# it: Dagster marks dagster-mlflow's resource and hook beta (it is this design's MLflow run
# owner, pinned with Dagster), and `Output(data_version=...)`, the documented way to version
# the snapshot asset. Filtered by their exact text, so any other warning still shows.
warnings.filterwarnings(
    "ignore",
    message=r"(Function `_create_mlflow_run_hook`|Dagster resource `mlflow_tracking`"
    r"|Class `MlFlow`|Parameter `data_version` of initializer `Output.__init__`)"
    r" is currently in beta",
)

"""Sensors: what the platform watches and reacts to."""

import dagster as dg

from churn_assets.ml import tracking
from churn_assets.ml.settings import ChurnSettings


@dg.run_failure_sensor(
    description="Ends MLflow runs still RUNNING after their Dagster run failed or crashed.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def failed_runs_mlflow_cleanup(context: dg.RunFailureSensorContext) -> None:
    """A run worker killed mid-step cannot end its MLflow run; the daemon does it here."""
    ended = tracking.end_runs_left_running(ChurnSettings(), context.dagster_run.run_id)
    if ended:
        context.log.info(f"marked MLflow runs {ended} FAILED")

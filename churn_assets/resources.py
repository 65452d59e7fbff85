"""MLflow tracking: dagster-mlflow's one run per Dagster run, configured from the environment."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import mlflow
from dagster_mlflow import mlflow_tracking
from dagster_mlflow.resources import MlFlow
from mlflow.entities import RunStatus

from churn_assets.ml import tracking
from churn_assets.ml.settings import ChurnSettings


def _final_status(context: dg.InitResourceContext) -> str:
    """KILLED for a cancelled run, FAILED once any of its steps failed, else FINISHED."""
    if context.instance is None or context.run_id is None:
        return RunStatus.to_string(RunStatus.FINISHED)
    run = context.instance.get_run_by_id(context.run_id)
    if run is not None and run.status in (
        dg.DagsterRunStatus.CANCELING,
        dg.DagsterRunStatus.CANCELED,
    ):
        return RunStatus.to_string(RunStatus.KILLED)
    failures = context.instance.get_records_for_run(
        context.run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1
    ).records
    return RunStatus.to_string(RunStatus.FAILED if failures else RunStatus.FINISHED)


@dg.resource(
    config_schema=mlflow_tracking.config_schema.config_type,
    description="dagster-mlflow tracking; ends its MLflow run whenever the resource is released.",
)
def _mlflow_tracking_closing(context: dg.InitResourceContext) -> Iterator[MlFlow]:
    """dagster-mlflow's `mlflow_tracking`, plus an end to its MLflow run on every release.

    `mlflow_tracking` resumes the MLflow run tagged with this Dagster run's ID, so steps in
    separate processes share one MLflow run. Its own clean-up only fires on an exception it
    can see and its hook only fits op jobs, which would leave runs RUNNING after asset runs
    launched from the CLI, the UI or a sensor. Ending the run whenever the resource is
    released (the next step resumes it) leaves it FINISHED or FAILED after the last step.
    """
    settings = ChurnSettings()
    tracking.ensure_experiment(settings)
    resource_generator: Iterator[MlFlow] = mlflow_tracking.resource_fn(context)
    mlf = next(resource_generator)
    mlflow.set_tag("git_sha", tracking.git_sha(settings))
    try:
        yield mlf
    finally:
        next(resource_generator, None)
        if mlflow.active_run() is not None:
            mlflow.end_run(status=_final_status(context))


def _tracking_config(_: Any) -> dict[str, Any]:
    """Resolved at run time (never at import), so the environment picks the MLflow store."""
    settings = ChurnSettings()
    return {
        "experiment_name": settings.experiment_name,
        "mlflow_tracking_uri": settings.tracking_uri,
        "env": {},
        "extra_tags": {"orchestrator": "dagster", "code_location": "churn_assets"},
    }


mlflow_tracking_resource = _mlflow_tracking_closing.configured(_tracking_config, config_schema={})

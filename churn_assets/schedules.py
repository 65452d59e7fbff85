"""Schedules: retraining by the calendar, for weeks when no extract lands."""

import dagster as dg

from churn_assets.jobs import churn_training
from churn_assets.ml import retraining

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=churn_training,
    cron_schedule=retraining.CRON,
    execution_timezone="UTC",
    # Off until someone turns it on (UI or `dagster schedule start weekly_retrain`): new
    # extracts already retrain through the landing sensor.
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain every Monday 06:00 UTC from the current snapshot (off by default).",
)

"""Sensors: what the platform watches and reacts to."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from churn_assets.assets.campaigns import contact_log, incoming_contact_log
from churn_assets.assets.landing import customer_snapshot, incoming_extract
from churn_assets.assets.monitoring import realized_performance
from churn_assets.jobs import churn_training, merge_extract, record_contacts
from churn_assets.ml.campaigns import contacts
from churn_assets.ml.data import landing
from churn_assets.ml.registry import tracking
from churn_assets.ml.settings import ChurnSettings
from churn_assets.resources import ChurnSettingsResource, ModelRegistryResource

#: Tags on every run the landing sensors start: the file's name and its content hash.
EXTRACT_TAG = "churn/extract"
EXTRACT_SHA256_TAG = "churn/extract_sha256"
CONTACT_LOG_TAG = "churn/contact_log"
CONTACT_LOG_SHA256_TAG = "churn/contact_log_sha256"
_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# Read when the code location loads: Dagster needs the interval with the definition.
_INTERVAL_S = ChurnSettings().sensor_interval_s


def _in_flight(instance: dg.DagsterInstance, job_name: str) -> str | None:
    runs = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=_IN_FLIGHT), limit=1
    )
    return runs[0].dagster_run.run_id if runs else None


@dataclass(frozen=True)
class _Landing:
    """A kind of file dropped into the landing folder, and the run each new one starts."""

    folder: Path
    what: str
    job_name: str
    #: the external asset the files show on
    landed: dg.AssetKey
    #: the asset the run records it with, and that asset's config for one file
    recorder: dg.AssetKey
    config: Callable[[str, str], dict[str, str]]
    #: what started the run, and the tags naming the file and its hash
    trigger: str
    file_tag: str
    sha256_tag: str


def _landing_tick(
    context: dg.SensorEvaluationContext, settings: ChurnSettings, landed: _Landing
) -> dg.SensorResult:
    """One run per new file content, keyed by its SHA-256 in the cursor and the run key.

    Both survive daemon restarts, so neither a restart nor a copy of the same file under
    another name records it twice. A file modified within CHURN_INCOMING_SETTLE_S is still
    being written and waits for a later tick; files go one run at a time, oldest first.
    """
    cursor = landing.LandingCursor.from_json(context.cursor)
    scan = landing.ready_extracts(
        landed.folder,
        cursor,
        settings.incoming_settle_s,
        limits=settings.extract_limits,
        what=landed.what,
    )
    # Each refused file is reported once (again if it changes) and never stops the others.
    refusals = [_refusal(landed.landed, refused) for refused in scan.newly_refused]
    for refused in scan.newly_refused:
        context.log.warning(f"{refused.reason}; it is skipped, the other files proceed")
    ready = scan.ready
    if not ready:
        return dg.SensorResult(
            skip_reason=f"no new settled {landed.what} in {landed.folder}",
            cursor=cursor.to_json(),
            asset_events=refusals,
        )
    in_flight = _in_flight(context.instance, landed.job_name)
    if in_flight:
        return dg.SensorResult(
            skip_reason=f"{len(ready)} {landed.what}(s) wait for run {in_flight} to finish",
            cursor=cursor.to_json(),
            asset_events=refusals,
        )
    file = ready[0]
    cursor.mark_seen(file.sha256)
    path = str(file.path.resolve())
    context.log.info(f"new {landed.what} {file.path.name} ({file.sha256[:12]})")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=file.sha256,
                run_config=dg.RunConfig(
                    ops={
                        landed.recorder.to_python_identifier(): {
                            "config": landed.config(path, file.sha256)
                        }
                    }
                ),
                tags={
                    "churn/trigger": landed.trigger,
                    landed.file_tag: file.path.name,
                    landed.sha256_tag: file.sha256,
                },
            )
        ],
        asset_events=[
            *refusals,
            dg.AssetMaterialization(
                landed.landed,
                description=f"{file.path.name} landed",
                metadata={
                    "path": dg.MetadataValue.path(path),
                    "sha256": file.sha256,
                    "size_bytes": file.size,
                    "modified_at": dg.MetadataValue.timestamp(file.mtime_ns / 1e9),
                },
                tags={"dagster/data_version": file.sha256},
            ),
        ],
        cursor=cursor.to_json(),
    )


@dg.sensor(
    job=merge_extract,
    minimum_interval_seconds=_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches the landing folder (CHURN_INCOMING_DIR) and merges each new extract into the "
        "snapshot, oldest first and one at a time; the retrain follows by automation."
    ),
)
def incoming_extracts(
    context: dg.SensorEvaluationContext, settings: ChurnSettingsResource
) -> dg.SensorResult:
    """A merge_extract run per new extract (see _landing_tick)."""
    churn_settings = settings.get()
    return _landing_tick(
        context,
        churn_settings,
        _Landing(
            folder=churn_settings.incoming_dir,
            what="extract",
            job_name=merge_extract.name,
            landed=incoming_extract.key,
            recorder=customer_snapshot.key,
            config=lambda path, sha256: {"extract_path": path, "extract_sha256": sha256},
            trigger="incoming_extract",
            file_tag=EXTRACT_TAG,
            sha256_tag=EXTRACT_SHA256_TAG,
        ),
    )


@dg.sensor(
    job=record_contacts,
    minimum_interval_seconds=_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches the landing folder's contacts/ subfolder and records each new contact log, "
        "then measures every campaign again (per protocol too), one log at a time."
    ),
)
def incoming_contact_logs(
    context: dg.SensorEvaluationContext, settings: ChurnSettingsResource
) -> dg.SensorResult:
    """A record_contacts run per new contact log (see _landing_tick)."""
    churn_settings = settings.get()
    folder = churn_settings.incoming_dir / contacts.LANDING_SUBFOLDER
    if folder.is_symlink():
        # the files' own check (in the folder they resolve to) would pass anywhere it points
        reason = f"{folder} is a symbolic link; links are never followed"
        context.log.warning(reason)
        return dg.SensorResult(skip_reason=reason)
    return _landing_tick(
        context,
        churn_settings,
        _Landing(
            folder=folder,
            what=contacts.WHAT,
            job_name=record_contacts.name,
            landed=incoming_contact_log.key,
            recorder=contact_log.key,
            config=lambda path, sha256: {"path": path, "sha256": sha256},
            trigger="incoming_contact_log",
            file_tag=CONTACT_LOG_TAG,
            sha256_tag=CONTACT_LOG_SHA256_TAG,
        ),
    )


def _refusal(landed: dg.AssetKey, refused: landing.RefusedFile) -> dg.AssetObservation:
    """A refused file on its landing asset's timeline, where its files show."""
    return dg.AssetObservation(
        landed,
        description=refused.reason,
        metadata={
            "refused_file": refused.name,
            "reason": refused.reason,
            "size_bytes": refused.size,
        },
    )


#: Runs the automation conditions of every churn asset (see churn_assets.automation).
churn_automation = dg.AutomationConditionSensorDefinition(
    "churn_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=_INTERVAL_S,
    run_tags={"churn/trigger": "automation"},
    description="Retrains, gates, promotes and scores after the snapshot changes.",
)


@dg.run_failure_sensor(
    description=(
        "After a run failed or its worker died: ends its MLflow runs still RUNNING and refuses "
        "the model versions it registered that never got a gate verdict."
    ),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=_INTERVAL_S,
    # Runs launched from the shell (`make run`, `dg launch`) carry no code location, so a
    # sensor watching only its own location would never see them fail.
    monitor_all_code_locations=True,
)
def failed_runs_mlflow_cleanup(
    context: dg.RunFailureSensorContext, registry: ModelRegistryResource
) -> None:
    """A run worker killed mid-step cannot clean up after itself; the daemon does it here."""
    run_id = context.dagster_run.run_id
    ended = tracking.end_runs_left_running(registry.settings.get(), run_id)
    if ended:
        context.log.info(f"marked MLflow runs {ended} FAILED")
    refused = registry.open().refuse_unjudged(run_id)
    if refused:
        context.log.info(f"refused model versions {refused}: their run died before the gate")


_REALIZED_CHECK = dg.AssetCheckKey(realized_performance.key, "realized_auc")


@dg.sensor(
    job=churn_training,
    minimum_interval_seconds=_INTERVAL_S,
    # On where CHURN_REALIZED_RETRAIN=true when the code location loads; else off until
    # someone starts it in the UI.
    default_status=(
        dg.DefaultSensorStatus.RUNNING
        if ChurnSettings().realized_retrain
        else dg.DefaultSensorStatus.STOPPED
    ),
    description=(
        "Retrains (behind the quality gate) once each time the realized_auc check warns that "
        "sent scores predicted churn worse than the gate's floor or the version's holdout."
    ),
)
def realized_retrain(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """One retrain per failed evaluation of the check, remembered by its record in the cursor."""
    history = context.instance.event_log_storage.get_asset_check_execution_history(
        _REALIZED_CHECK, limit=1
    )
    if not history:
        return dg.SensorResult(skip_reason="realized_auc has not been evaluated yet")
    record = history[0]
    evaluation = record.evaluation
    if evaluation is None or evaluation.passed or str(record.id) == context.cursor:
        return dg.SensorResult(skip_reason="realized_auc has no new warning")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"realized-auc-{record.id}",
                tags={"churn/trigger": "realized_auc", "churn/check_run": record.run_id},
            )
        ],
        cursor=str(record.id),
    )

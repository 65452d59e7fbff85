"""Resources: settings, the model registry, run-scoped storage, the run worker, MLflow tracking.

Everything here resolves at run time, never at import: the environment of the process that
executes a run picks the stores.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import mlflow
import pandas as pd
from dagster_mlflow import mlflow_tracking
from dagster_mlflow.resources import MlFlow
from mlflow.entities import RunStatus
from pydantic import Field, PrivateAttr

from churn_assets import run_workers
from churn_assets.ml import storage, stores
from churn_assets.ml.cluster.engine import ClusterSettings, open_client
from churn_assets.ml.cluster.runners import InProcess, OnCluster, PartitionRunner
from churn_assets.ml.evaluation.gate import GateThresholds
from churn_assets.ml.model.calibration_mode import CalibrationMode
from churn_assets.ml.registry import model_registry as registry
from churn_assets.ml.registry import signing, tracking
from churn_assets.ml.registry.model_registry import ModelRegistry
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.uris import without_credentials

if TYPE_CHECKING:
    from distributed import Client

#: The kind of record that signs a pickled run output (churn_assets.ml.registry.signing).
OUTPUT_KIND = "churn.output/v1"
#: Run tag naming a run whose outputs this run reads for the assets it does not materialize
#: itself (instead of each asset's latest materialization).
INPUTS_FROM_RUN_TAG = "churn/inputs_from_run"


class ChurnSettingsResource(dg.ConfigurableResource):
    """Platform settings in force: the environment (CHURN_*, MLFLOW_*, .env) of this process.

    The code location binds it with every field set to the environment's value, read as the
    location loads (churn_resources), so the resources page shows what runs apply; each run's
    process loads the location, and so reads them, again. Resource config at launch may set a
    field for one run. The quality gate's thresholds set here may only raise the environment's,
    the deployment's floor (see the quality_gate check). A field left unset (None, as in
    `ChurnSettingsResource()`) keeps the environment's value.
    """

    data_path: str | None = Field(
        default=None,
        description="CHURN_DATA_PATH: seed export, a new snapshot whenever its content changes.",
    )
    contract_path: str | None = Field(
        default=None,
        description="CHURN_CONTRACT_PATH: the export's data contract (YAML); unset: the shipped "
        "telco contract.",
    )
    snapshot_keep: int | None = Field(
        default=None,
        description="CHURN_SNAPSHOT_KEEP: newest snapshots kept besides those models use.",
    )
    incoming_dir: str | None = Field(
        default=None, description="CHURN_INCOMING_DIR: landing folder."
    )
    scores_dir: str | None = Field(
        default=None, description="CHURN_SCORES_DIR: ranked scores folder."
    )
    min_auc: float | None = Field(
        default=None, description="CHURN_MIN_AUC: gate, minimum holdout AUC."
    )
    min_accuracy: float | None = Field(
        default=None, description="CHURN_MIN_ACCURACY: gate, minimum holdout accuracy."
    )
    max_auc_drop: float | None = Field(
        default=None,
        description="CHURN_MAX_AUC_DROP: gate, AUC loss allowed against recent production.",
    )
    gate_beat_baseline: bool | None = Field(
        default=None, description="CHURN_GATE_BEAT_BASELINE: gate, also beat the baseline's AUC."
    )
    gate_history: int | None = Field(
        default=None,
        description="CHURN_GATE_HISTORY: recent production versions the gate compares with.",
    )
    max_plausible_auc: float | None = Field(
        default=None,
        description="CHURN_MAX_PLAUSIBLE_AUC: gate, AUC (model or one feature alone) above "
        "which the target has leaked.",
    )
    calibration: CalibrationMode | None = Field(
        default=None, description="CHURN_CALIBRATION: auto, always or never."
    )
    offer_cost: float | None = Field(
        default=None, description="CHURN_OFFER_COST: one retention offer."
    )
    saved_customer_value: float | None = Field(
        default=None, description="CHURN_SAVED_CUSTOMER_VALUE: value of keeping a leaver."
    )
    scores_reasons: int | None = Field(
        default=None, description="CHURN_SCORES_REASONS: reasons per customer in churn_scores."
    )
    control_fraction: float | None = Field(
        default=None,
        description="CHURN_CONTROL_FRACTION: share of a campaign's targets held back at random.",
    )
    explore_fraction: float | None = Field(
        default=None,
        description="CHURN_EXPLORE_FRACTION: share of customers below the threshold offered at "
        "random, to learn the offer's effect there.",
    )
    challenger_version: str | None = Field(
        default=None,
        description="CHURN_CHALLENGER_VERSION: a gate-attested version whose policy campaigns "
        "try beside production's (unset: production's version, when a challenger threshold is "
        "set; else no challenger).",
    )
    challenger_threshold: float | None = Field(
        default=None,
        description="CHURN_CHALLENGER_THRESHOLD: the challenger's decision threshold (unset: its "
        "version's).",
    )
    challenger_share: float | None = Field(
        default=None,
        description="CHURN_CHALLENGER_SHARE: share of each campaign's customers given to the "
        "challenger's policy, at random.",
    )
    uplift_min_outcomes: int | None = Field(
        default=None,
        description="CHURN_UPLIFT_MIN_OUTCOMES: customers with an outcome needed per arm before "
        "an uplift model is fitted.",
    )
    effect_min_campaigns: int | None = Field(
        default=None,
        description="CHURN_EFFECT_MIN_CAMPAIGNS: complete campaigns after which an effect still "
        "indistinguishable from none is warned about.",
    )

    @classmethod
    def in_force(cls, settings: ChurnSettings) -> ChurnSettingsResource:
        """This resource with every field set to its value in `settings` (scores_dir: the
        folder it resolves to), so the resources page shows the values in force."""
        values: dict[str, Any] = {name: getattr(settings, name) for name in cls.model_fields}
        values["scores_dir"] = settings.scores_folder
        shown: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
        return cls(**shown)

    def get(self) -> ChurnSettings:
        """The environment's settings with whatever this resource's config sets instead."""
        overrides = {name: value for name, value in self.model_dump().items() if value is not None}
        return ChurnSettings(**overrides)


class DaskResource(dg.ConfigurableResource):
    """The Dask cluster that steps spread their partitions over (churn_assets/ml/cluster).

    No scheduler: a LocalCluster of worker processes on this machine, started only when a
    step has at least `min_rows` rows and stopped when the step is done; smaller tables stay
    in process. A scheduler address: that cluster, for every size.
    """

    settings: ChurnSettingsResource
    scheduler_address: str | None = Field(
        default=None, description="CHURN_DASK_SCHEDULER: e.g. tcp://dask-scheduler:8786."
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        description="CHURN_DASK_WORKERS: LocalCluster workers; default the cores.",
    )
    min_rows: int | None = Field(
        default=None,
        ge=0,
        description="CHURN_DASK_MIN_ROWS: rows from which a LocalCluster is used.",
    )
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="CHURN_DASK_TIMEOUT_S: bound of one distributed computation.",
    )

    def cluster(self) -> ClusterSettings:
        """The environment's cluster settings with whatever this resource's config sets."""
        overrides: dict[str, Any] = {
            "scheduler": self.scheduler_address or None,
            "workers": self.workers,
            "min_rows": self.min_rows,
            "timeout_s": self.timeout_s,
        }
        return replace(
            ClusterSettings.from_settings(self.settings.get()),
            **{name: value for name, value in overrides.items() if value is not None},
        )

    @contextmanager
    def client(self) -> Iterator[Client]:
        with open_client(self.cluster()) as client:
            yield client

    @contextmanager
    def runner(self, rows: int) -> Iterator[PartitionRunner]:
        """Where a step's partitions of a `rows`-row table run: the cluster, or in process
        below `min_rows` (no scheduler set)."""
        cluster = self.cluster()
        if not cluster.uses_cluster(rows):
            yield InProcess()
            return
        with open_client(cluster) as client:
            yield OnCluster(client, cluster)


def deployment_floor() -> GateThresholds:
    """The gate thresholds of the deployment itself: its environment, never run config."""
    return GateThresholds.from_settings(ChurnSettings())


class ModelRegistryResource(dg.ConfigurableResource):
    """The churn and uplift models' MLflow registry: the one writer of versions, tags and
    the alias.

    Alias moves are compare-and-set under a lock every writer shares (CHURN_REGISTRY_LOCK, or
    derived from the store: a file lock beside SQLite, an advisory lock in PostgreSQL).
    """

    settings: ChurnSettingsResource

    def open(self) -> ModelRegistry:
        return registry.open_registry(self.settings.get())

    def open_uplift(self) -> ModelRegistry:
        """The uplift model's registry (CHURN_UPLIFT_MODEL_NAME), in the same store."""
        settings = self.settings.get()
        return registry.open_registry(settings, settings.uplift_model_name)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """A run that failed before its gate judged its versions refuses them."""
        if context.instance is None or context.run_id is None:
            return
        if not _run_failed(context.instance, context.run_id):
            return
        for opened in (self.open(), self.open_uplift()):
            refused = opened.refuse_unjudged(context.run_id)
            if refused and context.log is not None:
                context.log.warning(
                    f"refused {opened.name} versions {refused}: the run failed before the gate"
                )


class RunScopedIOManager(dg.ConfigurableIOManager):
    """Each run's outputs in a folder of that run: concurrent runs never read each other's.

    The folder is on the artifact store (CHURN_IO_URI: s3://churn/runs in the deployed
    stack), so a run in another container or pod reads what an earlier run wrote; by default
    it is <DAGSTER_HOME>/storage/churn_runs. Tables are Parquet (pandas dtypes and `attrs`
    kept), everything else a pickle, signed with training's key beside it (`.pkl.sig`): a
    pickle is code, and the store can be written by more hands than the run's, so none is
    unpickled unless the signature over its path and digest verifies.

    An input produced in the same run (or the parent run of a re-execution) is read from that
    run's folder. An input the run does not produce is read from the materialization the
    run tag `churn/inputs_from_run` names, else from the asset's latest materialization; the
    path comes from that materialization's metadata, and the step logs which run it used.
    """

    base_dir: str | None = Field(
        default=None,
        description="Where run folders live (a folder or s3://bucket/prefix); default "
        "CHURN_IO_URI, else <DAGSTER_HOME>/storage/churn_runs.",
    )

    _where: storage.Location | None = PrivateAttr(None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every step stores or loads through here, so this is where every run records which
        # process executes it (run monitoring's health check reads it: run_workers.py).
        if context.instance is not None and context.run_id is not None:
            run_workers.record_worker(context.instance, context.run_id)
        settings = ChurnSettings()
        base = self.base_dir or settings.io_uri
        if base is None and context.instance is not None:
            base = str(Path(context.instance.storage_directory()) / "churn_runs")
        if base is not None:
            self._where = storage.location(base, stores.s3_access(settings))

    @property
    def where(self) -> storage.Location:
        if self._where is None:
            raise dg.Failure("RunScopedIOManager needs a base_dir outside a Dagster instance")
        return self._where

    def _path(self, run_id: str, key: dg.AssetKey, suffix: str) -> str:
        return self.where.path(run_id, *key.path[:-1], f"{key.path[-1]}{suffix}")

    def folder_uri(self, run_id: str, key: dg.AssetKey) -> str:
        """The run's folder for the files of a table too large to pass whole, which a step
        writes a partition at a time (on Dask workers): its output is then a reference to them,
        stored here like any other, and the files live and go with the run's outputs."""
        return self.where.uri_of(self._path(run_id, key, ""))

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:  # MaterializeResult assets have nothing to store
            return
        where = self.where
        table = isinstance(obj, pd.DataFrame)
        path = self._path(context.run_id, context.asset_key, ".parquet" if table else ".pkl")
        with where.writing(path) as target:
            if table:
                obj.to_parquet(target, index=True, filesystem=where.filesystem)
            else:
                data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
                with where.filesystem.open_output_stream(target) as stream:
                    stream.write(data)
        if not table:
            signed = {"kind": OUTPUT_KIND, "path": path, "sha256": hashlib.sha256(data).hexdigest()}
            text, signature = signing.signer(ChurnSettings()).sign(signed)
            with (
                where.writing(f"{path}.sig") as target,
                where.filesystem.open_output_stream(target) as stream,
            ):
                stream.write(json.dumps({"record": text, "signature": signature}).encode())
        context.add_output_metadata(
            {"path": dg.MetadataValue.path(where.uri_of(path)), "stored_by_run": context.run_id}
        )

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        upstream = context.upstream_output
        run_id = _real_run_id(upstream)
        if run_id is not None:
            where = self.where
            table, other = (self._path(run_id, key, suffix) for suffix in (".parquet", ".pkl"))
            path = table if where.exists(table) else other
        else:
            run_id, recorded = self._recorded(context, key)
            s3 = stores.s3_access(ChurnSettings())
            where, path = storage.location_of_file(recorded, s3)
        if not where.exists(path):
            raise dg.Failure(
                f"{key.to_user_string()} of run {run_id} is not at {where.uri_of(path)}: "
                f"materialize {key.to_user_string()} again",
                allow_retries=False,
            )
        context.log.info(f"reading {key.to_user_string()} produced by run {run_id}")
        if path.endswith(".parquet"):
            return pd.read_parquet(path, filesystem=where.filesystem)
        return _verified_unpickle(where, path)

    def _recorded(self, context: dg.InputContext, key: dg.AssetKey) -> tuple[str, str]:
        instance = context.instance
        tags = context.step_context.dagster_run.tags
        chosen = tags.get(INPUTS_FROM_RUN_TAG)
        if chosen:
            # That run's own event log: found however many materializations came after it.
            records = instance.get_records_for_run(
                chosen, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records
            matching = [
                r.event_log_entry
                for r in records
                if r.event_log_entry.asset_materialization is not None
                and r.event_log_entry.asset_materialization.asset_key == key
            ]
            if not matching:
                raise dg.Failure(
                    f"run {chosen} (tag {INPUTS_FROM_RUN_TAG}) did not materialize "
                    f"{key.to_user_string()}",
                    allow_retries=False,
                )
            entry = matching[-1]
        else:
            latest = instance.get_latest_materialization_event(key)
            if latest is None:
                raise dg.Failure(
                    f"{key.to_user_string()} was never materialized: include it in the run",
                    allow_retries=False,
                )
            entry = latest
        materialization = entry.asset_materialization
        recorded = None if materialization is None else materialization.metadata.get("path")
        if recorded is None:
            raise dg.Failure(
                f"the materialization of {key.to_user_string()} by run {entry.run_id} records "
                "no stored output: materialize it again",
                allow_retries=False,
            )
        return entry.run_id, str(recorded.value)


def _verified_unpickle(where: storage.Location, path: str) -> Any:
    """A run output's pickle, unpickled only if training's key signed its path and bytes."""
    what = f"the stored output {where.uri_of(path)}"
    try:
        with where.filesystem.open_input_file(f"{path}.sig") as handle:
            envelope = json.loads(handle.read(64 * 1024))
        with where.filesystem.open_input_file(path) as handle:
            data = handle.read()
        verifier = signing.verifier(ChurnSettings())
        record = verifier.record(OUTPUT_KIND, envelope["record"], envelope["signature"], what)
    except (OSError, ValueError, KeyError, TypeError, signing.SignatureError) as error:
        raise dg.Failure(
            f"not reading {what}: it carries no valid signature of this platform's key "
            f"({type(error).__name__}: {error}); materialize it again",
            allow_retries=False,
        ) from None
    if record.get("path") != path or record.get("sha256") != hashlib.sha256(data).hexdigest():
        raise dg.Failure(
            f"not reading {what}: it is not the file its run wrote; materialize it again",
            allow_retries=False,
        )
    return pickle.loads(data)  # signed by this platform's training key, checked just above


def _real_run_id(upstream: dg.OutputContext | None) -> str | None:
    """The producing run, when Dagster knows it (same run, or a re-execution's parent)."""
    if upstream is None:
        return None
    try:
        run_id = upstream.run_id
    except dg.DagsterInvariantViolationError:
        return None
    return None if run_id.startswith("__") else run_id  # __EPHEMERAL_RUN_ID: another run


def _run_failed(instance: dg.DagsterInstance, run_id: str) -> bool:
    failures = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1
    ).records
    return bool(failures)


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
    failed = _run_failed(context.instance, context.run_id)
    return RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)


def mlflow_run_tracking(context: dg.InitResourceContext) -> Iterator[MlFlow]:
    """dagster-mlflow's `mlflow_tracking`, plus an end to its MLflow run on every release.

    `mlflow_tracking` resumes the MLflow run tagged with this Dagster run's ID, so steps in
    separate processes share one MLflow run. Its own clean-up only fires on an exception it
    can see and its hook only fits op jobs, which would leave runs RUNNING after asset runs
    launched from the CLI, the UI or a sensor. Ending the run whenever the resource is
    released (the next step resumes it) leaves it FINISHED or FAILED after the last step.
    """
    settings = ChurnSettings()
    tracking.ensure_experiment(settings)
    configured = context.replace_config(_tracking_config(settings))
    resource_generator: Iterator[MlFlow] = mlflow_tracking.resource_fn(configured)
    mlf = next(resource_generator)
    mlflow.set_tag("git_sha", tracking.git_sha(settings))
    try:
        yield mlf
    finally:
        next(resource_generator, None)
        if mlflow.active_run() is not None:
            mlflow.end_run(status=_final_status(context))


def _tracking_config(settings: ChurnSettings) -> dict[str, Any]:
    """`mlflow_tracking`'s config: the experiment and store of the settings of the run."""
    return {
        "experiment_name": settings.experiment_name,
        "mlflow_tracking_uri": settings.tracking_uri,
        "env": {},
        "extra_tags": {"orchestrator": "dagster", "code_location": "churn_assets"},
    }


def mlflow_resource(settings: ChurnSettings) -> dg.ResourceDefinition:
    """`mlflow_run_tracking`, described with the experiment and store it writes to.

    No config of its own: the experiment and store are the settings' (the registry, the
    checks and the CLI read the same), so run config cannot send one run elsewhere.
    """
    return dg.ResourceDefinition(
        mlflow_run_tracking,
        description=(
            f"MLflow tracking into experiment '{settings.experiment_name}' "
            f"(CHURN_EXPERIMENT_NAME) on {without_credentials(settings.tracking_uri)} "
            "(MLFLOW_TRACKING_URI, else <state>/mlflow.db). Each Dagster run is one MLflow "
            "run, opened by dagster-mlflow's mlflow_tracking and ended FINISHED, FAILED or "
            "KILLED when the run's last step releases it."
        ),
    )


def churn_resources(settings: ChurnSettings | None = None) -> dict[str, Any]:
    """Every resource the code location binds, by key (the UI's resources page).

    Built from the settings in force (the environment, when not given), read when this is
    called: as the code location loads, the way Dagster shows values read at definition time,
    so the resources page shows what runs apply. Every process that loads the location (a
    run's included) reads its own environment; secrets are never among these values.
    """
    settings = ChurnSettings() if settings is None else settings
    churn = ChurnSettingsResource.in_force(settings)
    return {
        "settings": churn,
        "registry": ModelRegistryResource(settings=churn),
        "dask": DaskResource(
            settings=churn,
            scheduler_address=settings.dask_scheduler,
            workers=settings.dask_workers,
            min_rows=settings.dask_min_rows,
            timeout_s=settings.dask_timeout_s,
        ),
        "io_manager": RunScopedIOManager(base_dir=settings.io_uri),
        "mlflow": mlflow_resource(settings),
    }
